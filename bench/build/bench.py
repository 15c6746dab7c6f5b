"""Benchmark: what the portal adds to a trivial build, next to `podman build` + `podman push` run by hand.

Everything is real and local: a podman store of its own with a busybox base image, docker-registry on a loopback
port, a SQLite database and Redis of its own, and (for the end-to-end figure) a real Celery worker.

Three figures, each the median of --runs builds of a one-RUN Containerfile whose RUN line changes every time (so the
step really runs; nothing comes from the layer cache):

- by hand:   podman build --pull=never, then podman push to the registry (what a person would type);
- pipeline:  the portal's build_execute in-process (build, push of two tags by digest, skopeo inspect, package list,
             log lines into the database): what a worker does once it has the task;
- end to end: build_start (the Build button's service) until the run row says succeeded, through Redis and a worker.

    bench/build/run [--runs 7]
"""

import argparse
import os
import platform
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
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-worker", action="store_true", help="skip the end-to-end figure")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-build-"))
    os.environ.update({
        "PORTAL_VAR_DIR": str(work / "var"),
        "DATABASE_URL": f"sqlite:///{work / 'bench.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "BUILD_PULL_POLICY": "never",
        "BUILD_CANCEL_POLL_SECONDS": "1",
        "LOG_LEVEL": "WARNING",
    })
    from tests.builds.fixtures import BASE_IMAGE, PodmanStore, Registry
    from tests.plugins.redis_server import RedisServer

    for name in ("podman", "registry", "redis"):
        (work / name).mkdir()
    store = PodmanStore(work / "podman")
    registry = redis = worker = None
    try:
        # Redis first and its URL in the environment before anything reads settings (the registry fixture's egress
        # allowance does); the registry's address is set in both, for this process and the worker it starts.
        redis = RedisServer(work / "redis")
        redis.start()
        os.environ["REDIS_URL"] = redis.url
        registry = Registry(work / "registry")
        os.environ["REGISTRY_URL"] = registry.address
        import django
        from django.conf import settings

        django.setup()
        settings.REGISTRY_URL = registry.address
        store.import_busybox()  # through the portal's demo code, which needs the app registry
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

        from django.db import transaction

        from builds import pipeline, services
        from builds.models import Build, Builder
        from builds.queues import local_queues
        from portal.celery import app
        from portal.logsink import lines_after
        from portal.models import Team, User

        team = Team.objects.create(name="Bench", slug="bench")
        user = User.objects.create(username="bench", is_superuser=True)
        Builder.objects.create(name="local", architecture=services.local_architecture(), capacity=2,
                               podman_root=store.root, podman_runroot=store.runroot)
        definition = services.definition_create(team=team, user=user, name="trivial")
        context = work / "ctx"
        context.mkdir()

        def by_hand(i):
            (context / "Containerfile").write_text(f"FROM {BASE_IMAGE}\nRUN echo hand-{i}-{time.time_ns()} > /x\n")
            ref = f"{registry.address}/bench/hand:{i}"
            started = time.monotonic()
            subprocess.run([*store.args(), "build", "--pull=never", "-q", "-t", ref, str(context)], check=True,
                           capture_output=True)
            subprocess.run([*store.args(), "push", "-q", "--tls-verify=false", ref], check=True, capture_output=True)
            return time.monotonic() - started

        def check(build):
            run = Build.objects.get(pk=build.pk).run
            if run.status != "succeeded":
                raise SystemExit(f"build failed: {run.exit_reason}\n" + "\n".join(t for _, t in lines_after(run)))
            return run

        def portal_pipeline(i):
            revision = services.revision_create(definition=definition, user=user, message=f"pipeline {i}",
                                                containerfile=f"FROM {BASE_IMAGE}\nRUN echo p-{i}-{time.time_ns()} > /x\n")
            started = time.monotonic()
            build = services.build_start(revision=revision, user=user)
            pipeline.build_execute(build.pk)
            elapsed = time.monotonic() - started
            check(build)
            return elapsed

        def portal_end_to_end(i):
            revision = services.revision_create(definition=definition, user=user, message=f"worker {i}",
                                                containerfile=f"FROM {BASE_IMAGE}\nRUN echo w-{i}-{time.time_ns()} > /x\n")
            started = time.monotonic()
            with transaction.atomic():
                build = services.build_start(revision=revision, user=user)
            while Build.objects.filter(pk=build.pk, run__status__in=["queued", "running"]).exists():
                time.sleep(0.02)
            elapsed = time.monotonic() - started
            run = check(build)
            return elapsed, (run.started_at - run.created_at).total_seconds()

        if not args.no_worker:
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q", ",".join(local_queues()), "-c", "1",
                 "-l", "WARNING",
                 "--without-heartbeat", "--without-mingle", "--without-gossip", "-n", f"bench-{os.getpid()}@%h"],
                cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + 60
            while not app.control.ping(timeout=0.5):
                if time.monotonic() > deadline:
                    raise SystemExit("the worker did not start")

        # Round-robin, so the three see the same machine load; the first round warms caches up and is not counted.
        hand, in_process, end_to_end, queue_waits = [], [], [], []
        for i in range(args.runs + 1):
            h, p = by_hand(i), portal_pipeline(i)
            e = portal_end_to_end(i) if worker is not None else None
            if i:
                hand.append(h)
                in_process.append(p)
                if e is not None:
                    end_to_end.append(e[0])
                    queue_waits.append(e[1])

        report(args.runs, hand, in_process, end_to_end, queue_waits)
    finally:
        if worker is not None:
            os.killpg(worker.pid, 15)
            worker.wait(15)
        if redis is not None:
            redis.stop()
        if registry is not None:
            registry.stop()
        store.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def report(runs, hand, in_process, end_to_end, queue_waits):
    h = median(hand)
    rows = [("podman build + podman push, by hand", hand, None)]
    rows.append(("portal pipeline (what a worker runs)", in_process, median(in_process) - h))
    if end_to_end:
        rows.append(("portal end to end (Build button → succeeded, via Redis + worker)", end_to_end,
                     median(end_to_end) - h))
    podman = subprocess.run(["podman", "--version"], capture_output=True, text=True).stdout.strip()
    cpus = os.cpu_count()
    print(f"\nbench/build, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}: {platform.platform()}, "
          f"{cpus} CPU(s), {podman}, median of {runs} rounds (by hand, pipeline, end to end in turn) after one warm-up round\n")
    print("| | median | fastest | median overhead vs by hand |")
    print("|---|---|---|---|")
    for name, values, overhead in rows:
        extra = "" if overhead is None else f"{overhead:+.2f} s ({overhead / h * 100:+.0f} %)"
        print(f"| {name} | {median(values):.2f} s | {min(values):.2f} s | {extra} |")
    if queue_waits:
        print(f"\nend to end, from the run row's creation until a worker started it: median {median(queue_waits):.2f} s")
    print("\nall runs (s): by hand " + ", ".join(f"{v:.2f}" for v in hand) + "; pipeline "
          + ", ".join(f"{v:.2f}" for v in in_process) + ("; end to end " + ", ".join(f"{v:.2f}" for v in end_to_end)
                                                         if end_to_end else ""))


if __name__ == "__main__":
    main()
