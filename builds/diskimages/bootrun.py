"""What a worker does with one boot test: copy the digest out of the registry, make its kernel and initramfs from the
image's own files (`bootmedia`), boot them in a throwaway QEMU VM (`qemu`) with the serial console streaming into the
run's log, and record the verdict.

`boot_test_execute(pk)` is the whole of the `builds.diskimages.tasks.boot_test_run` task (queue BOOT_TEST_QUEUE, whose
workers' concurrency is how many VMs run at once). It goes through the one executor (`portal.runs`): a redelivered task
does nothing; a cancel kills the VM within seconds; the run's time limit stops it; whatever happens the run ends
(succeeded is a pass) and the VM and its work directory, named after the run (`portal-boottest-<run id>`), are gone.
When it ends, promotions waiting for it are looked at again.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

import regex
from django.conf import settings
from django.db import transaction

from builds import fetches, registry
from builds.releases import tasks as release_tasks
from builds.runner import CommandFailed, LocalRunner, Watch, display
from portal import runs
from portal.models import Run, RunKind, RunStatus
from portal.services import run_set_phase

from . import bootmarker, bootmedia, qemu, vmaccess
from .models import BootTest

log = logging.getLogger(__name__)


def boot_test_execute(boot_test_id: int) -> None:
    boot_test = BootTest.objects.with_related().filter(pk=boot_test_id).first()
    if boot_test is None or boot_test.run.status != RunStatus.QUEUED:
        return
    run = boot_test.run
    if not runs.claim(run, phase="copying"):
        return
    for left in reap_leftovers():
        log.warning("boot tests: removed a leftover: %s", left)
    limit = runs.Limit(settings.BOOT_TEST_TIMEOUT_MINUTES * 60, "BOOT_TEST_TIMEOUT_MINUTES")
    found: dict = {}
    with runs.executing(run, what="the boot test", limit=limit, stopped="the VM was stopped and its files removed",
                        unavailable="This worker cannot run boot tests",
                        before_finish=lambda execution: _record(boot_test, execution, found),
                        after_finish=lambda execution: transaction.on_commit(_wake_promotions)) as execution:
        _boot(boot_test, execution, limit, found)


def _boot(boot_test, execution, limit, found):
    run, sink = boot_test.run, execution.sink
    watch = Watch(run=run, sink=sink, deadline=time.monotonic() + limit.seconds)
    try:
        accel = qemu.pick_accelerator(settings.BOOT_TEST_ACCEL)
        qemu.check_firmware(boot_test.firmware, settings.BOOT_TEST_OVMF_CODE)
        binary = qemu.qemu_binary()
    except qemu.QemuError as exc:
        raise runs.ToolMissing(str(exc)) from None
    try:
        marker = bootmarker.Marker(boot_test.marker)  # its searches are time-bound (bootmarker says why)
    except regex.error as exc:
        raise runs.Failed(f"The marker {boot_test.marker!r} (BOOT_TEST_MARKER) is not a regular expression: {exc}.") \
            from None
    why = qemu.kvm_unusable_reason() if accel == "tcg" else ""
    BootTest.objects.filter(pk=boot_test.pk).update(accel=accel, accel_note=why[:200])
    slower = f" (emulated, slower: {why or 'BOOT_TEST_ACCEL=tcg'})" if accel == "tcg" else ""
    sink.write(f"Boot test #{boot_test.pk} of {boot_test.source_ref}: {accel.upper()}{slower}, "
               f"{boot_test.firmware.upper()} firmware, {boot_test.memory_mb} MiB, {boot_test.cpus} CPU(s)")
    parent = work_parent()
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{qemu.vm_name(run.pk)}-", dir=parent))
    guest = vmaccess.GuestAccess.make(run.pk) if boot_test.ssh_checks else None
    try:
        media, copied_digest = _media(boot_test, work, watch, sink, guest)
        found["kernel_version"] = media.kernel_version
        config = qemu.VMConfig(
            name=qemu.vm_name(run.pk), kernel=media.kernel, initramfs=media.initramfs, accel=accel,
            firmware=boot_test.firmware, memory_mb=boot_test.memory_mb, cpus=boot_test.cpus,
            append="console=ttyS0 rdinit=/sbin/init panic=-1", ovmf_code=settings.BOOT_TEST_OVMF_CODE,
            hostfwd=guest.hostfwd() if guest else "")
        argv = qemu.args(config, qemu=binary)
        sink.write(f"::group::Booting {media.kernel_version} in a throwaway VM")
        sink.write(display(argv))
        run_set_phase(run, "booting")
        checks = None
        if guest is not None:
            sink.write(f"The checks log in over SSH through 127.0.0.1:{guest.port} (QEMU's hostfwd to the VM's port "
                       f"22) once the marker shows" + (", and again after the soak time" if boot_test.soak_seconds
                                                       else ""))

            def checks(round_number, log):
                return vmaccess.run_checks(guest, digest=boot_test.digest, script=boot_test.test_script,
                                           seconds=settings.BOOT_TEST_CHECK_SECONDS, round_number=round_number,
                                           log=log)
        verdict = qemu.boot(argv, watch=watch, marker=marker, boot_seconds=boot_test.boot_seconds_limit,
                            soak_seconds=boot_test.soak_seconds, max_console_bytes=settings.BOOT_TEST_CONSOLE_MAX_BYTES,
                            checks=checks)
        sink.write("::endgroup::")
        found["tail"], found["boot_seconds"], found["checks"] = verdict.tail, verdict.boot_seconds, verdict.checks
        if guest is not None and copied_digest != boot_test.digest:
            sink.write(f"The registry served a manifest with digest {copied_digest} for {boot_test.digest}")
        if not verdict.passed:
            raise runs.Failed(verdict.reason)
        with transaction.atomic():
            _record(boot_test, execution, found)
            execution.succeed(verdict.reason)
            transaction.on_commit(_wake_promotions)
    except qemu.QemuError as exc:
        raise runs.ToolMissing(str(exc)) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def work_parent() -> Path:
    return Path(settings.BOOT_TEST_WORK_DIR or tempfile.gettempdir())


def reap_leftovers() -> list[str]:
    """The VMs and work directories of boot tests whose run is no longer running (a worker that died mid-boot: the
    VM dies with it, its files stay), found on this machine by the run id in their names, killed and removed. Each
    boot test does this before it starts its own VM; `boot_test_reap` does it on beat's schedule."""
    running = set(Run.objects.filter(kind=RunKind.BOOT_TEST, status=RunStatus.RUNNING).values_list("pk", flat=True))
    parent = work_parent()
    removed = []
    for pid, run_id in qemu.vms_under(parent):
        if run_id not in running:
            qemu.stop_vm(pid)
            removed.append(f"the VM of run {run_id} (pid {pid})")
    for path in parent.glob(f"{qemu.VM_NAME_PREFIX}*"):
        run_id = qemu.run_id_of(path.name)
        if run_id is not None and run_id not in running and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(f"the work directory {path}")
    return removed


def _media(boot_test, work, watch, sink, guest):
    """The image's kernel and root file system, from the registry by digest, with the run's SSH keys and the
    deployment record when the checks log in (`vmaccess`); and the digest of the manifest that was copied."""
    sink.write(f"::group::Copying {boot_test.source_ref} out of the registry")
    refusal = fetches.repository_refusal(boot_test.repository, boot_test.team, write=False)
    if refusal:
        raise runs.Failed(refusal)
    access = registry.access_for(boot_test.team, boot_test.repository.split("/", 1)[0])
    authfile = None
    runner = LocalRunner(work_dir=str(work.parent))
    if access.auth_json():
        authfile = str(work / "auth.json")
        runner.write_file(authfile, access.auth_json(), 0o600)
    image_dir = work / "image"
    try:
        runner.run(registry.copy_to_dir_args(boot_test.source_ref, str(image_dir), tls_verify=access.tls_verify,
                                             authfile=authfile), watch=watch)
    except CommandFailed as exc:
        last = next((line for line in reversed(exc.output_tail) if line.strip()), str(exc))
        raise runs.Failed(f"The image could not be copied from the registry: {last.strip()[:300]}") from None
    sink.write("::endgroup::")
    run_set_phase(boot_test.run, "preparing")
    try:
        copied = bootmedia.manifest_digest(image_dir)
        extra = guest.guest_files(image_reference=boot_test.source_ref, digest=copied) if guest else None
        media = bootmedia.prepare(image_dir, work, max_bytes=settings.BOOT_TEST_ROOTFS_MAX_BYTES, extra_files=extra)
    except bootmedia.BootMediaError as exc:
        raise runs.Failed(f"The image cannot be booted: {exc}.") from None
    if guest is not None:
        sink.write("Added for the checks, as an installer's configuration would: root's authorized_keys (a key made "
                   "for this run), the VM's SSH host key (made for this run, pinned), and the deployment record "
                   f"/{vmaccess.DEPLOYMENT_RECORD} ({copied})")
    sink.write(f"Kernel {media.kernel_version} from the image; its root file system as the initramfs: {media.files} "
               f"files, {media.size:,} bytes")
    shutil.rmtree(image_dir, ignore_errors=True)
    return media, copied


def _record(boot_test, execution, found):
    """What the page and the approval card show beside the run's reason: the console's last lines, the kernel, the
    boot time."""
    BootTest.objects.filter(pk=boot_test.pk).update(
        console_tail=found.get("tail", []), kernel_version=found.get("kernel_version", "")[:100],
        boot_seconds=found.get("boot_seconds"), checks=found.get("checks", []))


def _wake_promotions():
    """Promotions waiting for this verdict are looked at now rather than at beat's next pass."""
    try:
        release_tasks.promotions_apply_due.delay()
    except Exception:  # noqa: BLE001 - beat's next pass does the same
        log.warning("could not queue promotions_apply_due after a boot test", exc_info=True)
