"""The simulated bootc follows bootc-reference.md over real SSH: download-only staging that a reboot drops and
--from-downloaded applies, soft reboots only where the entry allows, flags refused by versions that do not know them,
greenboot's boot counter before the fallback, a full disk during a download, and df on /sysroot."""

import json

import pytest

from hosts.connect import session_for, target_for
from portal import ssh
from tests.helpers import wait_for
from tests.hosts.fixtures import booted_state

pytestmark = pytest.mark.django_db


@pytest.fixture
def one_host(fleet, demo_images):
    digests, base = demo_images

    def make(version="1.16.9", soft=False):
        def state(s):
            booted_state(f"{base}:prod", digests["1.0"]["amd64"], "1.0")(s)
            s.bootc_version = version
            s.soft_reboot_capable = soft
        fleet.add("web-01", state)
        return fleet.start()["web-01"]
    return make


def run(host, command):
    with session_for(target_for(host)) as connection:
        return connection.run(command, timeout=10)


def status(host):
    return json.loads(run(host, ssh.bootc_status()).text())["status"]


def wait_back(fleet, name):
    wait_for(lambda: not fleet.sim(name).rebooting and fleet.sim(name).acceptor is not None, timeout=10,
             what=f"{name} back")


def test_a_download_only_update_is_locked_dropped_by_a_reboot_and_applied_from_downloaded(fleet, demo_images,
                                                                                          one_host):
    digests, _ = demo_images
    host = one_host()
    assert run(host, ssh.bootc_upgrade(download_only=True)).exit_status == 0
    staged = status(host)["staged"]
    assert staged["downloadOnly"] is True and staged["image"]["imageDigest"] == digests["1.1"]["amd64"]
    run(host, ssh.systemctl_reboot())
    wait_back(fleet, "web-01")
    after = status(host)
    assert after["staged"] is None and after["booted"]["image"]["imageDigest"] == digests["1.0"]["amd64"]
    assert run(host, ssh.bootc_upgrade(download_only=True)).exit_status == 0  # layers cached: no download again
    assert run(host, ssh.bootc_upgrade(from_downloaded=True, apply=True)).exit_status == 0
    wait_back(fleet, "web-01")
    assert status(host)["booted"]["image"]["imageDigest"] == digests["1.1"]["amd64"]


@pytest.mark.parametrize("version, command, flag", [
    ("1.11.0", ssh.bootc_upgrade(download_only=True), "--download-only"),
    ("1.6.0", ssh.bootc_upgrade(apply=True, soft_reboot="auto"), "--soft-reboot"),
    ("1.1.6", ssh.bootc_rollback(apply=True), "--apply"),
])
def test_a_bootc_too_old_for_a_flag_refuses_it_as_bootc_does(one_host, version, command, flag):
    host = one_host(version=version)
    result = run(host, command)
    assert result.exit_status == 2 and f"unexpected argument '{flag}' found" in result.error_text()


def test_old_versions_report_only_the_fields_they_have(one_host):
    booted = status(one_host(version="1.1.6"))["booted"]
    assert "architecture" not in booted["image"] and "softRebootCapable" not in booted and "downloadOnly" not in booted


def test_a_soft_reboot_happens_only_where_the_staged_entry_is_capable(fleet, one_host):
    host = one_host(soft=True)
    assert run(host, ssh.bootc_upgrade(apply=True, soft_reboot="auto")).exit_status == 0
    wait_back(fleet, "web-01")
    assert fleet.sim("web-01").state.last_reboot_soft


def test_required_soft_reboot_fails_on_an_entry_that_is_not_capable(one_host):
    result = run(one_host(soft=False), ssh.bootc_upgrade(apply=True, soft_reboot="required"))
    assert result.exit_status == 1 and "not soft-reboot capable" in result.error_text()


def test_greenboot_boots_the_failing_deployment_max_boot_attempts_times_then_falls_back(fleet, demo_images, one_host):
    digests, _ = demo_images
    host = one_host()
    fleet.fleet.set_fault("web-01", "fail_health_check", True)
    boot_before = fleet.sim("web-01").state.boot_id
    assert run(host, ssh.bootc_upgrade(apply=True)).exit_status == 0
    wait_back(fleet, "web-01")
    state = fleet.sim("web-01").state
    assert state.boot_id == boot_before + 1 + state.max_boot_attempts
    after = status(host)
    assert after["booted"]["image"]["imageDigest"] == digests["1.0"]["amd64"]
    assert after["rollback"]["image"]["imageDigest"] == digests["1.1"]["amd64"]
    journal = run(host, ssh.journalctl("greenboot-rpm-ostree-grub2-check-fallback.service")).text()
    assert "FALLBACK BOOT DETECTED" in journal


def test_a_full_disk_fails_the_download_with_enospc(fleet, one_host):
    host = one_host()
    fleet.fleet.set_fault("web-01", "disk_full", True)
    result = run(host, ssh.bootc_upgrade(download_only=True))
    assert result.exit_status == 1 and "No space left on device (os error 28)" in result.error_text()
    assert status(host)["staged"] is None


def test_the_same_failure_probability_fails_the_same_hosts(fleet, demo_images):
    from hosts.simbootc import BootcMachine

    class Probe(BootcMachine):
        def __init__(self, name, probability):
            self.state = type("S", (), {"name": name})()
            self.faults = {"fail_health_check": False, "failure_probability": probability}

    names = [f"web-{i:03d}" for i in range(200)]
    first = [n for n in names if Probe(n, 0.05)._fails_health_check("sha256:ab")]
    again = [n for n in names if Probe(n, 0.05)._fails_health_check("sha256:ab")]
    assert first == again and 2 <= len(first) <= 25


class TestPinning:
    """`ostree admin pin` as ostree does it: indexes count the staged deployment first, a staged deployment cannot be
    pinned, and a pinned deployment outlives the updates that would prune it (bootc lists it in otherDeployments)."""

    def test_the_booted_deployment_is_index_0_until_something_is_staged_then_1(self, fleet, demo_images, one_host):
        host = one_host()
        assert run(host, ssh.bootc_upgrade(download_only=True)).exit_status == 0
        refused = run(host, ssh.ostree_admin_pin(0))
        assert refused.exit_status == 1 and refused.error_text().strip() == "error: Cannot pin staged deployment"
        assert run(host, ssh.ostree_admin_pin(1)).text() == "Deployment is now pinned\n"
        assert status(host)["booted"]["pinned"] is True
        assert run(host, ssh.ostree_admin_pin(1)).text() == "Deployment is already pinned\n"

    def test_an_index_past_the_end_is_refused(self, one_host):
        result = run(one_host(), ssh.ostree_admin_pin(2))  # booted and rollback: 0 and 1
        assert result.exit_status == 1
        assert result.error_text().strip() == "error: Out of range deployment index 2, expected < 2"

    def test_a_pinned_deployment_outlives_two_updates_and_an_unpinned_one_does_not(self, fleet, demo_images,
                                                                                   one_host, oci_registry):
        from hosts import simregistry

        digests, _ = demo_images
        host = one_host()
        assert run(host, ssh.ostree_admin_pin(0)).exit_status == 0  # 1.0, booted
        assert run(host, ssh.bootc_upgrade(apply=True)).exit_status == 0  # to 1.1, which prod holds
        wait_back(fleet, "web-01")
        newer = simregistry.push_demo_image(oci_registry.address, "platform/web-os", version="1.3", tags=["prod"])
        assert run(host, ssh.bootc_upgrade(apply=True)).exit_status == 0  # to 1.3
        wait_back(fleet, "web-01")

        after = status(host)
        assert after["booted"]["image"]["imageDigest"] == newer["amd64"]
        assert after["rollback"]["image"]["imageDigest"] == digests["1.1"]["amd64"]
        others = after["otherDeployments"]
        assert [(o["image"]["imageDigest"], o["pinned"]) for o in others] == [(digests["1.0"]["amd64"], True)]
        assert "sha256:" + "0" * 64 not in json.dumps(after)  # 0.9, the rollback before, was not pinned: pruned

        assert run(host, ssh.ostree_admin_pin(2, unpin=True)).text() == "Deployment is now unpinned\n"
        assert status(host)["otherDeployments"][0]["pinned"] is False  # pruned by the next deployment


def test_switch_enforcing_the_container_policy_refuses_an_accept_anything_default_and_marks_what_it_pulls(
        fleet, demo_images, one_host):
    digests, base = demo_images
    host = one_host()
    enforced = ssh.bootc_switch(f"{base}:prod", enforce_signatures=True)
    refused = run(host, enforced)
    assert refused.exit_status == 1
    assert "containers-policy.json specifies a default of `insecureAcceptAnything`; refusing usage" in refused.error_text()
    assert status(host)["staged"] is None

    policy = {"default": [{"type": "reject"}], "transports": {"docker": {"": [{"type": "insecureAcceptAnything"}]}}}
    fleet.fleet.edit_etc("web-01", "containers/policy.json", "M", text=json.dumps(policy))
    assert run(host, enforced).exit_status == 0
    document = json.loads(run(host, ssh.bootc_status()).text())
    assert document["spec"]["image"]["signature"] == "containerPolicy"
    assert document["status"]["staged"]["image"]["image"]["signature"] == "containerPolicy"
    assert "signature" not in document["status"]["booted"]["image"]["image"]  # pulled without enforcing
    run(host, ssh.systemctl_reboot())
    wait_back(fleet, "web-01")
    booted = status(host)["booted"]["image"]
    assert booted["imageDigest"] == digests["1.1"]["amd64"] and booted["image"]["signature"] == "containerPolicy"
