"""Boot tests end to end: images the portal built from Debian's kernel and a small init (tests/diskimages/bootimages.py),
copied out of the loopback registry by digest and booted in real QEMU, with the console in the run's log.

The worker's part (`builds.diskimages.bootrun.boot_test_execute`, what the `boot_test_run` task calls) runs in this
process, so each test can look at the rows it wrote.
"""

import re
import time

import pytest

from builds.diskimages import bootplans, bootrun, qemu
from builds.diskimages import services_boottests as boottests
from builds.diskimages.models import BootTest
from builds.releases import services as promotions
from builds.releases.models import PromotionStatus
from portal.logsink import lines_after
from portal.models import RunStatus
from portal.services import run_request_cancel
from tests.diskimages.bootimages import FLOOD, GOOD, HANG, PANIC, SSH_GOOD
from tests.helpers import start_in_thread, wait_for

pytestmark = pytest.mark.slow


def boot(build, user):
    boot_test = boottests.boot_test_start(build=build, user=user)
    bootrun.boot_test_execute(boot_test.pk)
    return BootTest.objects.with_related().get(pk=boot_test.pk)


def console(boot_test):
    return "\n".join(text for _, text in lines_after(boot_test.run))


def leftovers(settings):
    """QEMU processes and work directories of this test's boot tests."""
    from pathlib import Path

    parent = Path(settings.BOOT_TEST_WORK_DIR)
    return qemu.vms_under(parent), sorted(parent.glob("portal-boottest-*")) if parent.exists() else []


def test_an_image_that_boots_to_its_login_prompt_passes(build_image, boot_settings, personas):
    boot_settings.BOOT_TEST_SOAK_SECONDS = 1
    build = build_image(GOOD)
    boot_test = boot(build, personas.developer)
    log = console(boot_test)
    assert boot_test.run.status == RunStatus.SUCCEEDED, boot_test.run.exit_reason + "\n" + log
    assert re.fullmatch(r"Booted to the marker in \d+\.\d s, and stayed up 1 s\.", boot_test.run.exit_reason)
    assert boot_test.accel in ("kvm", "tcg") and boot_test.boot_seconds > 0
    assert "Linux version" in log  # the image's own kernel, on the serial console
    assert "test-os: init started on " + boot_test.kernel_version in log  # the image's own init, on that kernel
    assert "boot test: the console reached the marker" in log
    assert leftovers(boot_settings) == ([], [])


def test_a_kernel_panic_fails_with_the_panic_lines_kept(build_image, boot_settings, personas):
    boot_test = boot(build_image(PANIC), personas.developer)
    assert boot_test.run.status == RunStatus.FAILED
    assert boot_test.run.exit_reason == "The kernel panicked."
    assert any("Kernel panic - not syncing" in line for line in boot_test.console_tail)
    assert any("cannot mount /sysroot" in line for line in boot_test.console_tail)
    assert leftovers(boot_settings) == ([], [])


def test_a_boot_that_never_finishes_fails_at_its_deadline(build_image, boot_settings, personas):
    # Some five times what the init takes to start under TCG on a busy machine (3.5-5.5 s at a load of 6 on two
    # cores), so it is reached and its last line is in the tail; every second of it is waited for.
    boot_settings.BOOT_TEST_BOOT_SECONDS = 20
    boot_test = boot(build_image(HANG), personas.developer)
    assert boot_test.run.status == RunStatus.FAILED
    assert boot_test.run.exit_reason == ("The boot did not reach the marker within 20 s (BOOT_TEST_BOOT_SECONDS).")
    assert "waiting for a device that never comes" in "\n".join(boot_test.console_tail)
    assert leftovers(boot_settings) == ([], [])


def test_a_console_flood_is_capped_and_fails_the_boot(build_image, boot_settings, personas):
    boot_settings.BOOT_TEST_CONSOLE_MAX_BYTES = 64 * 1024
    boot_test = boot(build_image(FLOOD), personas.developer)
    assert boot_test.run.status == RunStatus.FAILED
    assert "The console printed more than 64 KiB (BOOT_TEST_CONSOLE_MAX_BYTES)" in boot_test.run.exit_reason
    assert boot_test.run.log_lines < 5000  # about the cap's worth of lines, never the megabytes a loop prints


def test_cancel_mid_boot_leaves_no_vm_and_no_files(build_image, boot_settings, personas, transactional_db):
    build = build_image(HANG)
    boot_test = boottests.boot_test_start(build=build, user=personas.developer)
    thread = start_in_thread(bootrun.boot_test_execute, boot_test.pk)
    wait_for(lambda: leftovers(boot_settings)[0], timeout=60, what="the VM to start")
    asked = time.monotonic()
    run_request_cancel(run=BootTest.objects.with_related().get(pk=boot_test.pk).run, user=personas.developer)
    thread.join(30)
    boot_test = BootTest.objects.with_related().get(pk=boot_test.pk)
    assert boot_test.run.status == RunStatus.CANCELLED
    assert time.monotonic() - asked < 5
    assert leftovers(boot_settings) == ([], [])


def test_missing_firmware_fails_the_run_with_what_to_do(build_image, boot_settings, personas):
    boot_settings.BOOT_TEST_FIRMWARE = "uefi"
    boot_settings.BOOT_TEST_OVMF_CODE = "/nowhere/OVMF_CODE_4M.fd"
    boot_test = boot(build_image(GOOD), personas.developer)
    assert boot_test.run.status == RunStatus.FAILED
    assert "BOOT_TEST_OVMF_CODE=/nowhere/OVMF_CODE_4M.fd is missing" in boot_test.run.exit_reason


def test_a_leftover_of_a_dead_worker_is_reaped_by_its_run_id(boot_settings, db):
    from pathlib import Path

    stale = Path(boot_settings.BOOT_TEST_WORK_DIR) / "portal-boottest-999999-abc"
    stale.mkdir(parents=True)
    (stale / "rootfs.cpio").write_bytes(b"x")
    assert bootrun.reap_leftovers() == [f"the work directory {stale}"]
    assert not stale.exists()


# --- Checks over SSH inside the VM -------------------------------------------------------------------------------------


def with_ssh_checks(build, personas, **plan):
    bootplans.boot_test_plan_save(definition=build.definition, user=personas.developer, ssh_checks=True, **plan)
    return build


def test_the_checks_log_in_over_ssh_and_pass_again_after_the_soak(build_image, bootable_ssh_base, boot_settings,
                                                                  personas):
    build = with_ssh_checks(build_image(SSH_GOOD), personas, soak_seconds=2,
                            test_script="test -s /root/.ssh/authorized_keys && echo kernel $(uname -r)")
    boot_test = boot(build, personas.developer)
    log = console(boot_test)
    assert boot_test.run.status == RunStatus.SUCCEEDED, boot_test.run.exit_reason + "\n" + log
    assert "passed 4 checks over SSH, and stayed up 2 s with them passing again" in boot_test.run.exit_reason
    names = ["log in over SSH", "bootc status reports the digest", "systemctl is-system-running",
             "the definition's test script"]
    assert [(c["round"], c["name"], c["passed"]) for c in boot_test.checks] == (
        [(1, name, True) for name in names] + [(2, name, True) for name in names])
    assert boot_test.checks[1]["detail"] == f"booted {build.digest}, the digest under test"
    assert f"kernel {boot_test.kernel_version}" in boot_test.checks[3]["detail"]  # the script ran on the VM's kernel
    assert "test-os: sshd started" in log and "hostfwd=tcp:127.0.0.1:" in log
    assert leftovers(boot_settings) == ([], [])


def test_a_failing_test_script_fails_the_boot_with_what_it_said(build_image, bootable_ssh_base, boot_settings,
                                                                personas):
    build = with_ssh_checks(build_image(SSH_GOOD), personas,
                            test_script='echo "web: port 80 is not answering" >&2; exit 3')
    boot_test = boot(build, personas.developer)
    assert boot_test.run.status == RunStatus.FAILED
    assert boot_test.run.exit_reason == "The definition's test script exited 3 in the VM: web: port 80 is not answering."
    assert [c["passed"] for c in boot_test.checks] == [True, True, True, False]
    assert leftovers(boot_settings) == ([], [])


# --- The gate --------------------------------------------------------------------------------------------------------


def require_boot_test(team, name="dev"):
    stage = team.stages.get(name=name)
    stage.require_boot_test = True
    stage.save(update_fields=["require_boot_test"])
    return stage


def test_the_gate_refuses_a_panicking_digest_with_its_console_lines_and_promotes_the_good_one(
        build_image, boot_settings, personas, client_for):
    from builds.releases.apply import promotion_apply_execute

    dev = require_boot_test(personas.team)
    bad, good = build_image(PANIC, name="bad-os"), build_image(GOOD, name="good-os")

    refused = promotions.promotion_request(definition=bad.definition, build=bad, target_stage=dev,
                                           user=personas.developer, reason="try it")
    assert refused.status == PromotionStatus.APPROVED  # no approvals needed, but it waits for its boot test
    assert refused.status_note.startswith("Approved; waits: Boot test #")
    started = BootTest.objects.get(digest=bad.digest)
    assert started.run.trigger == "promotion"
    bootrun.boot_test_execute(started.pk)
    promotions.promotions_apply_due()
    refused.refresh_from_db()
    assert refused.status == PromotionStatus.FAILED
    assert refused.status_note == (f"Refused: Boot test #{started.pk} of {bad.short_digest} failed: The kernel panicked. "
                                   "dev takes only images that passed one.")
    card = client_for(personas.viewer).get(refused.get_absolute_url()).content.decode()
    assert "Kernel panic - not syncing" in card and f"Boot test #{started.pk}" in card

    promoted = promotions.promotion_request(definition=good.definition, build=good, target_stage=dev,
                                            user=personas.developer, reason="ship it")
    bootrun.boot_test_execute(BootTest.objects.get(digest=good.digest).pk)
    promotions.promotions_apply_due()
    promoted.refresh_from_db()
    assert promoted.status == PromotionStatus.APPLYING, promoted.status_note
    promotion_apply_execute(promoted.run_id)
    promoted.refresh_from_db()
    assert promoted.status == PromotionStatus.APPLIED, promoted.status_note
