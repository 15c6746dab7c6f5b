"""Benchmark: a build whose RUN step prints a gigabyte without a newline.

`RUN head -c SIZE /dev/zero | tr '\\0' a` is built for real (podman, its own store, a busybox base, docker-registry
on loopback, SQLite, Redis of its own), once by hand and once by the portal's pipeline, for each size. The pipeline
runs in a fresh child process, as a Celery worker runs a task, so its peak RSS (VmHWM) is the worker's own; podman's
peak RSS is counted apart (the largest of the child's children). By hand, podman's output is read and thrown away:
that is what podman itself costs.

First the line splitter alone (`portal.logsink.LineSplitter`, against the quadratic one it replaced), then the
builds. What must hold: time grows linearly with the size (and stays close to podman's own), the worker's peak memory does
not grow with it, and the build succeeds with one cut line in its log.

    bench/bigline/run [--sizes 64M,256M,1G]
"""

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3}


def parse_size(text):
    text = text.strip().upper()
    return int(text[:-1]) * UNITS[text[-1]] if text[-1] in UNITS else int(text)


def human(size):
    for unit in ("G", "M", "K"):
        if size >= UNITS[unit] and size % UNITS[unit] == 0:
            return f"{size // UNITS[unit]} {unit}iB"
    return f"{size} B"


def containerfile(base, size):
    """The RUN line differs every time (a comment the shell ignores), so the step really runs: no layer cache."""
    return (f"FROM {base}\nRUN head -c {size} /dev/zero | tr '\\0' a  # {time.time_ns()}\n"
            "RUN echo after-the-long-line\n")


def environment(work):
    return {
        "PORTAL_VAR_DIR": str(work / "var"),
        "DATABASE_URL": f"sqlite:///{work / 'bench.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "BUILD_PULL_POLICY": "never",
        "LOG_LEVEL": "WARNING",
    }


class QuadraticSplitter:
    """The runners' line splitter before it was made linear, kept here only to compare: every read was appended to
    the buffer and the whole buffer split again, so output without a newline cost time quadratic in its size."""

    def __init__(self):
        self.buffer = b""

    def feed(self, data):
        self.buffer += data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, self.buffer = self.buffer.split(b"\n")
        return [line.decode("utf-8", "replace") for line in lines]


def splitter_seconds(make, data, total):
    """Seconds to split `total` bytes fed as 64 KiB reads of `data`."""
    splitter, reads = make(), total // len(data)
    started = time.perf_counter()
    for _ in range(reads):
        splitter.feed(data)
    return time.perf_counter() - started


def splitter_figures():
    from portal.logsink import LineSplitter

    no_newline, lines = b"a" * 65536, (b"a" * 79 + b"\n") * 819
    rows = []
    # (label, one read, total, times to time the quadratic splitter: 0 = hopeless). The fastest of a few runs each:
    # what the code costs, not what the shared machine's neighbours did meanwhile.
    for label, data, size, old_runs in (("without a newline", no_newline, 32 * UNITS["M"], 1),
                                        ("without a newline", no_newline, UNITS["G"], 0),
                                        ("in 80-byte lines", lines, 32 * UNITS["M"], 3)):
        new_seconds = min(splitter_seconds(LineSplitter, data, size) for _ in range(3))
        old_seconds = min(splitter_seconds(QuadraticSplitter, data, size) for _ in range(old_runs)) if old_runs else None
        rows.append((f"{human(size)} {label}", old_seconds, new_seconds))
    return rows


def child(build_id):
    """What a worker does with the task, in this fresh process; prints its own figures as JSON."""
    import django

    django.setup()
    from builds import pipeline

    started, cpu = time.monotonic(), time.process_time()
    pipeline.build_execute(build_id)
    wall, cpu = time.monotonic() - started, time.process_time() - cpu
    status = Path("/proc/self/status").read_text()
    hwm_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
    podman_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"wall": wall, "cpu": cpu, "worker_peak_kib": hwm_kib, "podman_peak_kib": podman_kib}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="64M,256M,1G")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)

    sizes = [parse_size(s) for s in args.sizes.split(",")]
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-bigline-"))
    os.environ.update(environment(work))
    from tests.builds.fixtures import BASE_IMAGE, PodmanStore, Registry
    from tests.plugins.redis_server import RedisServer

    for name in ("podman", "registry", "redis"):
        (work / name).mkdir()
    store = PodmanStore(work / "podman")
    registry = redis = None
    rows = []
    try:
        redis = RedisServer(work / "redis")
        redis.start()
        os.environ["REDIS_URL"] = redis.url
        registry = Registry(work / "registry")  # reads the settings (the egress allow-list): after REDIS_URL
        # The worker (a child process) reads these from its environment; this process's settings are loaded already.
        os.environ.update({"REGISTRY_URL": registry.address, "EGRESS_ALLOW": registry.address})
        from django.conf import settings

        settings.REGISTRY_URL = registry.address
        import django

        django.setup()
        store.import_busybox()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

        from builds import services
        from builds.models import Build, Builder
        from builds.queues import local_queues
        from portal import workers

        # This process stands for the worker (its child runs each task): the heartbeat says the build queues are served.
        settings.WORKER_HEARTBEAT_SECONDS = 3600
        workers.beat(name=f"bench-bigline-{os.getpid()}@bench", queues=local_queues(), concurrency=1)
        from portal.logsink import lines_after
        from portal.models import LogChunk, Team, User

        team = Team.objects.create(name="Bench", slug="bench")
        user = User.objects.create(username="bench", is_superuser=True)
        Builder.objects.create(name="local", architecture=services.local_architecture(), capacity=1,
                               podman_root=store.root, podman_runroot=store.runroot)
        definition = services.definition_create(team=team, user=user, name="bigline")
        definition.timeout_minutes = 120
        definition.save()
        context = work / "ctx"
        context.mkdir()

        def by_hand(size):
            (context / "Containerfile").write_text(containerfile(BASE_IMAGE, size))
            started = time.monotonic()
            process = subprocess.Popen([*store.args(), "build", "--pull=never", str(context)],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            read = 0
            while chunk := process.stdout.read1(65536):
                read += len(chunk)
            process.wait()
            wall = time.monotonic() - started
            if process.returncode:
                raise SystemExit(f"podman build failed by hand ({process.returncode})")
            return wall, read

        def by_portal(size):
            revision = services.revision_create(definition=definition, user=user, message=human(size),
                                                containerfile=containerfile(BASE_IMAGE, size))
            build = services.build_start(revision=revision, user=user)
            done = subprocess.run([sys.executable, __file__, "--child", str(build.pk)], cwd=ROOT, env=os.environ,
                                  capture_output=True, text=True, check=True)
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            build = Build.objects.with_related().get(pk=build.pk)
            lines = [text for _, text in lines_after(build.run)]
            if build.run.status != "succeeded" or not lines:
                raise SystemExit(f"the portal's build {build.run.status}: {build.run.exit_reason}\n" + "\n".join(lines)
                                 + done.stderr[-2000:])
            figures.update(status=build.run.status, reason=build.run.exit_reason, log_lines=len(lines),
                           longest=max(len(line) for line in lines),
                           cut=sum(1 for line in lines if "[… cut: the line is longer than" in line),
                           stored=sum(len(c.text) for c in LogChunk.objects.filter(run=build.run)))
            return figures

        splitting = splitter_figures()
        baseline = by_portal(1024)  # a short line: the worker's memory with nothing long to hold
        for size in sizes:
            hand_wall, hand_bytes = by_hand(size)
            portal = by_portal(size)
            rows.append((size, hand_wall, hand_bytes, portal))
        report(splitting, baseline, rows, settings.RUN_LOG_LINE_MAX_CHARS, load_before)
    finally:
        if redis is not None:
            redis.stop()
        if registry is not None:
            registry.stop()
        store.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def report(splitting, baseline, rows, line_max, load_before):
    podman = subprocess.run(["podman", "--version"], capture_output=True, text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    load = f"load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    print(f"\nbench/bigline, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}: {cpu}, {os.cpu_count()} CPU(s), "
          f"{platform.platform()}, {podman}, SQLite, RUN_LOG_LINE_MAX_CHARS={line_max:,}, {load}\n")
    print("| the line splitter alone, output fed in 64 KiB reads | before (quadratic) | now |")
    print("|---|---|---|")
    for label, old_seconds, new_seconds in splitting:
        before = f"{old_seconds:.2f} s" if old_seconds is not None else "(hours)"
        print(f"| {label} | {before} | {new_seconds:.2f} s |")
    print()
    print(f"baseline (a RUN printing 1 KiB): worker peak RSS {baseline['worker_peak_kib'] / 1024:.0f} MB, "
          f"pipeline {baseline['wall']:.1f} s\n")
    print("| RUN prints, without a newline | podman build by hand | portal pipeline (a worker) | worker CPU | "
          "worker peak RSS | podman peak RSS | log | result |")
    print("|---|---|---|---|---|---|---|---|")
    for size, hand_wall, _, portal in rows:
        print(f"| {human(size)} | {hand_wall:.1f} s ({size / hand_wall / 1024**2:.0f} MiB/s) | {portal['wall']:.1f} s "
              f"({size / portal['wall'] / 1024**2:.0f} MiB/s) | {portal['cpu']:.1f} s | "
              f"{portal['worker_peak_kib'] / 1024:.0f} MB | {portal['podman_peak_kib'] / 1024:.0f} MB | "
              f"{portal['log_lines']} lines, {portal['stored'] / 1024:.0f} KiB stored, {portal['cut']} cut | "
              f"{portal['status']} |")


if __name__ == "__main__":
    main()
