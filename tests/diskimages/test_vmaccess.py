"""The checks over SSH (`builds.diskimages.vmaccess`) against a real OpenSSH sshd on loopback, without a VM: what each
failing check makes the verdict say. The whole path through a booted VM is in test_boottests.py."""

import json

import pytest

from builds.diskimages import vmaccess
from portal import ssh
from tests.helpers import require_tool
from tests.hosts.fixtures import SshdServer

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def status_document(digest):
    return json.dumps({"apiVersion": "org.containers.bootc/v1", "kind": "BootcHost",
                       "status": {"booted": {"image": {"imageDigest": digest}}, "type": "bootcHost"}})


@pytest.fixture
def guest(tmp_path):
    """A GuestAccess whose "VM" is sshd on loopback, with a scripted bootc and systemctl (SetEnv PATH)."""
    require_tool("/usr/sbin/sshd", "ssh-keygen")
    client_private, client_public = ssh.generate_keypair("portal-boottest-1")
    status = tmp_path / "status.json"
    server = SshdServer(tmp_path / "sshd", authorized_keys=[client_public], status_path=status)
    access = vmaccess.GuestAccess(port=server.port, client_private=client_private, client_public=client_public,
                                  host_private="", host_public=server.host_key)

    def answers(*, booted=DIGEST, state="running"):
        status.write_text(status_document(booted))
        systemctl = server.directory / "bin" / "systemctl"
        systemctl.write_text(f"#!/bin/sh\necho {state}\n[ {state} = running ]\n")
        systemctl.chmod(0o755)

    answers()
    yield access, answers
    server.stop()


def check(access, script=""):
    lines = []
    result = vmaccess.run_checks(access, digest=DIGEST, script=script, seconds=20, round_number=1, log=lines.append)
    return result, lines


def test_the_checks_pass_when_bootc_reports_the_digest_and_systemd_is_running(guest):
    access, _ = guest
    result, lines = check(access, script="echo all good")
    assert result.passed and result.reason == ""
    assert [r["name"] for r in result.results] == ["log in over SSH", "bootc status reports the digest",
                                                   "systemctl is-system-running", "the definition's test script"]
    assert "boot test: passed: the definition's test script: exit 0; all good" in lines


def test_another_booted_digest_fails_with_both_digests(guest):
    access, answers = guest
    answers(booted=OTHER)
    result, _ = check(access)
    assert not result.passed
    assert result.reason == f"bootc status in the VM reports {OTHER} booted, not {DIGEST}."


def test_a_degraded_system_fails(guest):
    access, answers = guest
    answers(state="degraded")
    result, _ = check(access)
    assert result.reason == "systemctl is-system-running in the VM says degraded, not running."


def test_a_vm_that_never_answers_fails_at_the_check_deadline():
    _, public = ssh.generate_keypair("vm")
    private, client = ssh.generate_keypair("client")
    access = vmaccess.GuestAccess(port=vmaccess.free_loopback_port(), client_private=private, client_public=client,
                                  host_private="", host_public=public)
    result = vmaccess.run_checks(access, digest=DIGEST, script="", seconds=1, round_number=1, log=lambda line: None)
    assert result.reason.startswith("The VM could not be logged in to over SSH within 1 s (BOOT_TEST_CHECK_SECONDS): ")
    assert result.results == [{"round": 1, "name": "log in over SSH", "passed": False,
                               "detail": result.reason.split("(BOOT_TEST_CHECK_SECONDS): ", 1)[1]}]


def test_a_vm_with_another_host_key_gets_no_login(guest):
    access, _ = guest
    _, stranger = ssh.generate_keypair("someone-else")
    access.host_public = stranger
    result, _ = check(access)
    assert "presented a different host key" in result.reason and "Nothing was sent to it" in result.reason
