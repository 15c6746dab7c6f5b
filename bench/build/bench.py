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
    from tests.builds_fixtures import BASE_IMAGE, PodmanStore, Registry
    from tests.conftest import RedisServer

    for name in ("podman", "registry", "redis"):
        (work / name).mkdir()
    store = PodmanStore(work / "podman")
    registry = redis = worker = None
    try:
        store.import_busybox()
        registry = Registry(work / "registry")
        redis = RedisServer(work / "redis")
        redis.start()
        os.environ.update({"REGISTRY_URL": registry.address, "REDIS_URL": redis.url})
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

        # --- by hand ---------------------------------------------------------------------------------------------------
        hand = []
        context = work / "ctx"
        context.mkdir()
        for i in range(args.runs + 1):
            (context / "Containerfile").write_text(f"FROM {BASE_IMAGE}\nRUN echo hand-{i}-{time.time_ns()} > /x\n")
            ref = f"{registry.address}/bench/hand:{i}"
            started = time.monotonic()
            subprocess.run([*store.args(), "build", "--pull=never", "-q", "-t", ref, str(context)], check=True,
                           capture_output=True)
            subprocess.run([*store.args(), "push", "-q", "--tls-verify=false", ref], check=True, capture_output=True)
            if i:  # the first run warms caches up
                hand.append(time.monotonic() - started)

        # --- the portal ------------------------------------------------------------------------------------------------
        from builds import pipeline, services
        from builds.models import Build, Builder
        from portal.models import RunStatus, Team, User

        team = Team.objects.create(name="Bench", slug="bench")
        user = User.objects.create(username="bench", is_superuser=True)
        Builder.objects.create(name="local", architecture=services.local_architecture(), capacity=2,
                               podman_root=store.root, podman_runroot=store.runroot)
        definition = services.definition_create(team=team, user=user, name="trivial")

        def new_revision(tag):
            return services.revision_create(definition=definition, user=user, message=tag,
                                            containerfile=f"FROM {BASE_IMAGE}\nRUN echo {tag}-{time.time_ns()} > /x\n")

        in_process = []
        for i in range(args.runs + 1):
            revision = new_revision(f"pipeline-{i}")
            started = time.monotonic()
            build = services.build_start(revision=revision, user=user)
            pipeline.build_execute(build.pk)
            elapsed = time.monotonic() - started
            build.run.refresh_from_db()
            if build.run.status != RunStatus.SUCCEEDED:
                from portal.logsink import lines_after

                raise SystemExit(f"build failed: {build.run.exit_reason}\n"
                                 + "\n".join(t for _, t in lines_after(build.run)))
            if i:
                in_process.append(elapsed)

        end_to_end, queue_waits = [], []
        if not args.no_worker:
            from django.db import transaction

            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q", "builds", "-c", "1", "-l", "WARNING",
                 "--without-heartbeat", "--without-mingle", "--without-gossip", "-n", f"bench-{os.getpid()}@%h"],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            from portal.celery import app

            deadline = time.monotonic() + 60
            while not app.control.ping(timeout=0.5):
                if time.monotonic() > deadline:
                    raise SystemExit("the worker did not start")
            for i in range(args.runs + 1):
                revision = new_revision(f"worker-{i}")
                started = time.monotonic()
                with transaction.atomic():
                    build = services.build_start(revision=revision, user=user)
                while True:
                    status = Build.objects.filter(pk=build.pk).values_list("run__status", flat=True).get()
                    if status in ("succeeded", "failed", "cancelled"):
                        break
                    time.sleep(0.02)
                elapsed = time.monotonic() - started
                run = Build.objects.get(pk=build.pk).run
                if status != "succeeded":
                    from portal.logsink import lines_after

                    raise SystemExit(f"build failed: {run.exit_reason}\n" + "\n".join(t for _, t in lines_after(run)))
                if i:
                    end_to_end.append(elapsed)
                    queue_waits.append((run.started_at - run.created_at).total_seconds())

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
          f"{cpus} CPU(s), {podman}, median of {runs} runs after one warm-up\n")
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
