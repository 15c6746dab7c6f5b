#!/usr/bin/env python
"""The cost of one scrape of the portal's own metrics (portal.metrics.PortalCollector) against the number of runs.

A scratch PostgreSQL database on DATABASE_URL's server (created, migrated, dropped), a redis-server of its own on a
free loopback port (the queue depths), one team, and runs of every kind inserted in bulk with realistic statuses,
durations and log line counts, spread over a year as a year of work would leave them. For each size: a
process's first scrape (which tallies every settled run once), then 20 scrapes: wall time p50 and max, and the
database time of their queries over the runs.
Results: stdout (Markdown) and bench/metrics/results.json.
"""

import argparse
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="10000,100000")
    parser.add_argument("--scrapes", type=int, default=20)
    args = parser.parse_args()
    sizes = [int(n) for n in args.runs.split(",")]
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith("postgres"):  # `make bench` runs every benchmark: say why this one did nothing
        print("bench/metrics skipped: DATABASE_URL must name a PostgreSQL server, e.g. "
              "postgres://postgres@127.0.0.1:5432/postgres (a scratch database is made there and dropped)")
        return
    parts = urlsplit(base)
    name = f"portal_bench_metrics_{os.getpid()}"
    scratch = urlunsplit(parts._replace(path=f"/{name}"))
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL)
    var_dir = tempfile.mkdtemp(prefix=f"{name}-")
    try:
        env = {**os.environ, "DATABASE_URL": scratch, "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
               "PORTAL_VAR_DIR": var_dir}
        log("migrating the scratch database")
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        os.environ.update(env)
        results = measure(sizes, args.scrapes)
    finally:
        redis.terminate()
        shutil.rmtree(var_dir, ignore_errors=True)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    report(results)


def measure(sizes, scrapes):
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from portal import metrics
    from portal.models import Run, RunKind, RunStatus, Team

    team = Team.objects.create(name="Bench", slug="bench")
    kinds = list(RunKind.values)
    weights = {"host_action": 6, "build": 3, "disk_image": 1, "promotion_apply": 1}
    rng = random.Random(7)
    now = datetime.now(UTC)
    results, made = [], 0
    for size in sizes:
        log(f"inserting runs up to {size:,}")
        while made < size:
            batch = []
            for _ in range(min(10000, size - made)):
                kind = rng.choices(kinds, weights=[weights.get(k, 1) for k in kinds])[0]
                status = rng.choices([RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED], [90, 8, 2])[0]
                started = now - timedelta(seconds=rng.uniform(0, 365 * 86400))  # a year of work
                batch.append(Run(kind=kind, title="bench", team=team, status=status, created_at=started,
                                 started_at=started, finished_at=started + timedelta(seconds=rng.expovariate(1 / 90)),
                                 log_lines=rng.randint(10, 5000)))
            Run.objects.bulk_create(batch)
            made += len(batch)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE portal_run")
        # A process's first scrape tallies every settled run; the later ones only the last day's (portal.metrics).
        metrics.settled_runs = metrics.SettledRuns()
        collector = metrics.PortalCollector()
        started = time.perf_counter()
        list(collector.collect())
        first_ms = (time.perf_counter() - started) * 1000
        walls, db_ms = [], []
        for _ in range(scrapes):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                families = list(collector.collect())
                walls.append((time.perf_counter() - started) * 1000)
            db_ms.append(sum(float(q["time"]) for q in queries.captured_queries if "portal_run" in q["sql"]) * 1000)
        samples = sum(len(f.samples) for f in families)
        results.append({"runs": size, "first_ms": first_ms, "p50_ms": statistics.median(walls), "max_ms": max(walls),
                        "runs_queries_p50_ms": statistics.median(db_ms), "samples": samples})
        log(f"{size:,} runs: p50 {statistics.median(walls):.0f} ms")
    return results


def report(results):
    machine = {"when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpu": platform.processor() or platform.machine(),
               "cores": os.cpu_count(), "load": os.getloadavg()}
    (HERE / "results.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    print(f"{machine['when']}, {machine['cores']} cores, load {machine['load'][0]:.1f}\n")
    print("| runs | a process's first scrape | later scrapes p50 | max | their queries over runs, p50 | samples |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['runs']:,} | {r['first_ms']:.0f} ms | {r['p50_ms']:.0f} ms | {r['max_ms']:.0f} ms | "
              f"{r['runs_queries_p50_ms']:.0f} ms | {r['samples']} |")


if __name__ == "__main__":
    main()
