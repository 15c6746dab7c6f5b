"""Benchmark: boot-to-verdict time of the small test image (Debian's kernel, busybox, a shell init that prints a login
prompt), with KVM and with TCG, and what the portal adds to running the same `qemu-system-x86_64` command by hand.

Everything is real and local: a podman store of its own with the bootable base (tests/diskimages/bootimages.py),
docker-registry on a loopback port, a SQLite database of its own. The image is built and pushed once by the portal's
build pipeline. Then, for each accelerator, in turn each round:

- by hand:  the VM's own command line (the kernel and initramfs made once beforehand), from exec until the login prompt
            appears on the console, then the VM is killed (what a person timing `qemu-system-x86_64 ...` would see);
- portal:   `bootrun.boot_test_execute` in-process, from the row's creation until the verdict is recorded: the copy out
            of the registry by digest (skopeo), the initramfs made from the layers, the same VM, the console into the
            run's log in the database, the VM killed and its files removed.

With `--ssh`, the image is the one the checks log in to (Debian's sshd, tests/diskimages/bootimages.py SSH_GOOD)
and both sides go on past the marker: by hand, OpenSSH's client logs in through the same loopback forward (retried
until sshd answers) and runs `bootc status --format=json --format-version=1` and `systemctl is-system-running`; the
portal runs its checks over SSH (`vmaccess`), one round (no soak).

    bench/boottest/run [--runs 5] [--ssh]
"""

import argparse
import os
import platform
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def median(values):
    return statistics.median(values) if values else float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--deadline", type=int, default=60, help="seconds a boot may take before it counts as failed")
    parser.add_argument("--ssh", action="store_true", help="the image the checks log in to, checked over SSH")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-boottest-"))
    os.environ.update({
        "PORTAL_VAR_DIR": str(work / "var"),
        "DATABASE_URL": f"sqlite:///{work / 'bench.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "BUILD_PULL_POLICY": "never",
        "LOG_LEVEL": "WARNING",
        "BOOT_TEST_WORK_DIR": str(work / "vms"),
        "BOOT_TEST_SOAK_SECONDS": "0",
    })
    from tests.builds.fixtures import PodmanStore, Registry
    from tests.diskimages.bootimages import BOOTABLE_BASE, GOOD, SSH_GOOD, build_ssh_base, debian_kernel
    from tests.plugins.redis_server import RedisServer

    for name in ("podman", "registry", "redis"):
        (work / name).mkdir()
    store = PodmanStore(work / "podman")
    registry = redis = None
    try:
        redis = RedisServer(work / "redis")  # the live log's channel layer
        redis.start()
        os.environ["REDIS_URL"] = redis.url
        registry = Registry(work / "registry")
        os.environ["REGISTRY_URL"] = registry.address
        import django
        from django.conf import settings

        django.setup()
        settings.REGISTRY_URL, settings.REGISTRY_INSECURE = registry.address, True
        store.import_busybox()
        kernel, version = debian_kernel()
        context = work / "base"
        context.mkdir()
        shutil.copy2(kernel, context / "vmlinuz")
        (context / "Containerfile").write_text(f"FROM localhost/base:latest\nCOPY vmlinuz /usr/lib/modules/{version}/vmlinuz\n")
        store.run("build", "--pull=never", "--tag", BOOTABLE_BASE, str(context))
        if args.ssh:
            build_ssh_base(store.run, version)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

        from builds import pipeline, services
        from builds.diskimages import bootmedia, bootrun, qemu
        from builds.diskimages import services_boottests as boottests
        from builds.diskimages.models import BootTest
        from builds.models import Build, Builder
        from portal.celery import app
        from portal.models import Team, User

        app.conf.task_always_eager = True  # the boot test's task runs in this process when it is queued, as a worker would

        team = Team.objects.create(name="Bench", slug="bench")
        user = User.objects.create(username="bench", is_superuser=True)
        Builder.objects.create(name="local", architecture=services.local_architecture(), capacity=1,
                               podman_root=store.root, podman_runroot=store.runroot)
        definition = services.definition_create(team=team, user=user, name="test-os")
        revision = services.revision_create(definition=definition, user=user, containerfile=SSH_GOOD if args.ssh else GOOD)
        if args.ssh:
            from builds.diskimages import bootplans

            bootplans.boot_test_plan_save(definition=definition, user=user, ssh_checks=True, soak_seconds=0)
        build = services.build_start(revision=revision, user=user)
        pipeline.build_execute(build.pk)
        build = Build.objects.with_related().get(pk=build.pk)
        if not build.succeeded:
            raise SystemExit(f"the image did not build: {build.run.exit_reason}")

        # The kernel and initramfs for the by-hand runs, made once from the same digest.
        media_dir = work / "media"
        media_dir.mkdir()
        subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{build.repository}@{build.digest}",
                        f"dir:{media_dir / 'image'}"], check=True)
        guest = None
        if args.ssh:
            from builds.diskimages import vmaccess

            guest = vmaccess.GuestAccess.make(0)
            (work / "client_key").write_text(guest.client_private)
            (work / "client_key").chmod(0o600)
            (work / "known_hosts").write_text(f"[127.0.0.1]:{guest.port} {guest.host_public}\n")
        media = bootmedia.prepare(media_dir / "image", media_dir, max_bytes=settings.BOOT_TEST_ROOTFS_MAX_BYTES,
                                  extra_files=guest.guest_files(image_reference=f"{build.repository}@{build.digest}",
                                                                digest=bootmedia.manifest_digest(media_dir / "image"))
                                  if guest else None)
        marker = re.compile(settings.BOOT_TEST_MARKER)

        def by_hand(accel):
            config = qemu.VMConfig(name="bench-by-hand", kernel=media.kernel, initramfs=media.initramfs, accel=accel,
                                   firmware="bios", memory_mb=settings.BOOT_TEST_MEMORY_MB, cpus=settings.BOOT_TEST_CPUS,
                                   append="console=ttyS0 rdinit=/sbin/init panic=-1",
                                   hostfwd=guest.hostfwd() if guest else "")
            started = time.monotonic()
            vm = subprocess.Popen(qemu.args(config), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  stdin=subprocess.DEVNULL)
            seen = b""
            try:
                while not marker.search(seen.decode(errors="replace").replace("\r", "\n").rsplit("\n", 1)[-1]):
                    if time.monotonic() - started > args.deadline:
                        return None  # did not boot (KVM here stops after the kernel's setup code)
                    ready, _, _ = select.select([vm.stdout], [], [], 1)
                    data = os.read(vm.stdout.fileno(), 65536) if ready else b""
                    if ready and not data:
                        return None
                    seen += data
                while guest is not None:  # the same checks by hand: OpenSSH's client through the same forward
                    if time.monotonic() - started > args.deadline:
                        return None
                    login = subprocess.run(
                        ["ssh", "-i", str(work / "client_key"), "-p", str(guest.port), "-o", "BatchMode=yes",
                         "-o", f"UserKnownHostsFile={work / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
                         "-o", "ConnectTimeout=5", "root@127.0.0.1",
                         "bootc status --format=json --format-version=1 && systemctl is-system-running"],
                        capture_output=True, text=True)
                    if login.returncode == 0 and build.digest in login.stdout and login.stdout.strip().endswith("running"):
                        break
                    time.sleep(0.5)
                return time.monotonic() - started
            finally:
                vm.kill()
                vm.wait()

        def portal(accel):
            settings.BOOT_TEST_ACCEL = accel
            started, started_wall = time.monotonic(), time.time()
            boot_test = boottests.boot_test_start(build=build, user=user)  # runs it (eager), like a free worker
            bootrun.boot_test_execute(boot_test.pk)  # does nothing if it ran already
            elapsed = time.monotonic() - started
            boot_test = BootTest.objects.with_related().get(pk=boot_test.pk)
            if boot_test.run.status != "succeeded":
                print(f"{accel}: the boot test failed: {boot_test.run.exit_reason}")
                return None, None
            phases.setdefault(accel, []).append(_phases(boot_test.run, started_wall))
            return elapsed, boot_test.boot_seconds

        settings.BOOT_TEST_BOOT_SECONDS = args.deadline
        accels = ["kvm", "tcg"] if qemu.kvm_usable() else ["tcg"]
        results, phases = {}, {}
        for accel in accels:
            hand, whole, to_marker = [], [], []
            for i in range(args.runs + 1):  # the first round warms caches up and is not counted
                h = by_hand(accel)
                p, m = portal(accel)
                if h is None or p is None:
                    print(f"{accel}: no boot within {args.deadline} s, by hand: {h is not None}, portal: {p is not None}")
                    break
                if i:
                    hand.append(h)
                    whole.append(p)
                    to_marker.append(m)
            results[accel] = (hand, whole, to_marker)
        report(args.runs, results, media, ssh=args.ssh)
        for accel, found in phases.items():
            print(f"\n{accel}: the portal's rounds by the run log's line times (s): "
                  + "; ".join(", ".join(f"{name} {value:.2f}" for name, value in round_.items()) for round_ in found))
    finally:
        if redis is not None:
            redis.stop()
        if registry is not None:
            registry.stop()
        store.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def _phases(run, started_wall):
    """Where a portal round's time went, from the times the log sink stored with each line: request to QEMU's start
    (the copy out of the registry, the initramfs), QEMU's start to the marker, the marker to the last line (the checks
    over SSH), and the last line to the verdict recorded (the VM killed, its files removed, the rows written)."""
    from portal import logsink

    _, lines, times = logsink.lines_between(run, limit=100_000)
    seconds = [t / 1000 for t in times]

    def when(text):
        return next((t for line, t in zip(lines, seconds, strict=True) if text in line), float("nan"))

    qemu_at, marker_at = when("qemu-system-x86_64 -name "), when("boot test: the console reached the marker")
    run.refresh_from_db()
    return {"to QEMU": qemu_at - started_wall, "QEMU to marker": marker_at - qemu_at,
            "marker to last line": seconds[-1] - marker_at, "then to verdict": run.finished_at.timestamp() - seconds[-1]}


def report(runs, results, media, *, ssh=False):
    qemu_version = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    print(f"\nbench/boottest, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}: {platform.platform()}, "
          f"{os.cpu_count()} CPU(s), {qemu_version}; kernel {media.kernel_version}, initramfs {media.size:,} bytes; "
          f"median of {runs} rounds after one warm-up round\n")
    done = "login prompt, then ssh: bootc status and systemctl" if ssh else "login prompt"
    print(f"| accelerator | by hand: exec to {done} | portal: boot to marker (in the run) "
          "| portal: request to verdict | portal overhead vs by hand |")
    print("|---|---|---|---|---|")
    for accel, (hand, whole, to_marker) in results.items():
        if not hand:
            print(f"| {accel.upper()} | did not boot | did not boot | | |")
            continue
        overhead = median(whole) - median(hand)
        print(f"| {accel.upper()} | {median(hand):.2f} s | {median(to_marker):.2f} s | {median(whole):.2f} s | "
              f"{overhead:+.2f} s ({overhead / median(hand) * 100:+.0f} %) |")
    for accel, (hand, whole, _) in results.items():
        print(f"\n{accel}: by hand " + ", ".join(f"{v:.2f}" for v in hand) + "; portal " + ", ".join(f"{v:.2f}" for v in whole))


if __name__ == "__main__":
    main()
