"""Reading `bootc status` when it does not print a status document: each case is built from real output whose source
is named.

- A failing bootc (non-zero exit): the host page says stderr's error line, and keeps stdout as it was.
- The human-readable format: recognised and named, with the command the portal runs instead.
- A bootc too old for --format-version=1: read again with --format=json only, and the host says so.
"""

from pathlib import Path

import pytest

from hosts import bootc, poller
from hosts.models import Host, HostSnapshot, HostState

FAILURES = Path(__file__).resolve().parents[1] / "data" / "failures"

# bootc-dev/bootc issue 1887: `sudo bootc status` on a composefs host whose deployment list is out of order.
STDERR_1887 = ("error: Status: Getting composefs deployment status: Getting composefs deployment status: Checking soft "
               "reboot capability: Setting soft reboot capability for Type1 entries: Entry not found\n")
# bootc-dev/bootc issue 900: the human-readable status of a Bluefin host (bootc of November 2024).
HUMAN_900 = """No staged image present
Current booted image: ghcr.io/ublue-os/bluefin-dx:stable
    Image version: 41.20241112.1 (2024-11-12 21:11:21 UTC)
    Image digest: sha256:9b4558a05315a855dffd3999c0693725a80754fa41b83ba536968b3e0e3afd5d
Current rollback image: ghcr.io/ublue-os/bluefin-dx:latest
    Image version: 41.20241108.0 (2024-11-08 04:43:34.141 UTC)
    Image digest: sha256:88b5636c07f05dbdd604634dfbdb9af6d7357cde0dbf731697b53acf95058920
"""
# bootc-dev/bootc issue 1795: the newer human format's first line.
HUMAN_1795 = "● Booted image: images.paas.redhat.com/bootc/rhel-bootc:latest-10.1\n"
# clap's refusal of an option a bootc does not know, as bootc printed it for --source-imgref (bootc-image-builder
# issue 360, tests/data/failures/bib-regression-bootc360.log), for --format-version.
REFUSED_FORMAT_VERSION = ("error: unexpected argument '--format-version' found\n\n"
                          "Usage: bootc status [OPTIONS]\n\nFor more information, try '--help'.\n")


@pytest.mark.parametrize("text", [HUMAN_900, HUMAN_1795], ids=["older", "newer"])
def test_the_human_format_is_named_with_the_command_to_run_instead(text):
    with pytest.raises(bootc.StatusUnreadable) as caught:
        bootc.parse_status(text)
    message = str(caught.value)
    assert "human-readable" in message and "--format=json" in message
    assert "malformed" not in message.lower()


def test_the_error_line_of_a_failed_status_is_stderrs_own():
    assert bootc.error_line(STDERR_1887) == STDERR_1887.strip()
    # The corpus log of bootc issue 800: the "ERROR:" line, not the echoed `$ sudo bootc status`.
    log = (FAILURES / "bootc-status-error-800.log").read_text()
    assert bootc.error_line(log).startswith("ERROR: Status: Computing status: Booted deployment")


def test_the_message_of_a_failed_status_keeps_stdout_apart():
    message = bootc.failed_status_message(1, STDERR_1887, b'{"apiVersion": "org.containers.bootc/v1", "kind": "Boo')
    assert message.startswith("bootc status failed (exit 1): error: Status: Getting composefs deployment status")
    assert "kept below as it was" in message
    assert bootc.failed_status_message(1, "", b"") == "bootc status failed (exit 1): it printed nothing on stderr"


def test_a_refused_format_version_is_recognised():
    assert bootc.refuses_format_version(REFUSED_FORMAT_VERSION)
    assert not bootc.refuses_format_version(STDERR_1887)
    assert not bootc.refuses_format_version("error: unexpected argument '--soft-reboot' found")


@pytest.fixture
def host(personas):
    return Host.objects.create(team=personas.team, name="web-01", address="127.0.0.1")


def test_a_failed_status_with_output_records_stderrs_line_and_keeps_stdout_raw(host):
    stdout = b'{"apiVersion": "org.containers.bootc/v1", "kind": "BootcHost", "status": {"booted": {"ima'
    outcome = poller.PollOutcome(host.pk, raw=stdout, exit_status=1, stderr=STDERR_1887)
    assert poller.record_outcome(host, outcome) == "changed"
    host.refresh_from_db()
    assert host.state == HostState.UNREADABLE
    assert host.last_error.startswith("bootc status failed (exit 1): error: Status: Getting composefs")
    assert "malformed" not in host.last_error and "cut off" not in host.last_error
    assert host.raw_status == stdout.decode()
    assert HostSnapshot.objects.get(host=host).raw == stdout.decode()


def test_a_status_read_with_the_fallback_says_which(host):
    document = ('{"apiVersion": "org.containers.bootc/v1alpha1", "kind": "BootcHost", "spec": {"image": {"image": '
                '"quay.io/centos-bootc/centos-bootc:stream9", "transport": "registry"}}, "status": {"booted": '
                '{"image": {"image": {"image": "quay.io/centos-bootc/centos-bootc:stream9", "transport": "registry"}, '
                '"imageDigest": "sha256:' + "a" * 64 + '"}}}}')
    outcome = poller.PollOutcome(host.pk, raw=document.encode(), exit_status=0, note=bootc.FORMAT_FALLBACK_NOTE)
    poller.record_outcome(host, outcome)
    host.refresh_from_db()
    assert host.state != HostState.UNREADABLE
    assert host.last_error_kind == "format" and "--format=json" in host.last_error


@pytest.mark.parametrize("keep_open", [False, True], ids=["connection-per-poll", "kept-open"])
def test_a_bootc_too_old_for_format_version_is_read_with_format_json_and_says_so(fleet, settings, keep_open):
    from tests.hosts.fixtures import booted_state

    settings.HOSTS_SSH_KEEP_OPEN = keep_open
    make = booted_state("quay.io/centos-bootc/centos-bootc:stream9", "sha256:" + "b" * 64)

    def old_bootc(state):
        make(state)
        state.bootc_version = "0.1.13"

    fleet.add("old-01", old_bootc)
    hosts = fleet.start()
    poller.poll_hosts([hosts["old-01"].pk])
    host = fleet.host("old-01")
    assert host.state == HostState.RUNNING, host.last_error
    assert host.booted_digest == "sha256:" + "b" * 64
    assert host.last_error_kind == "format" and "too old for --format-version=1" in host.last_error
