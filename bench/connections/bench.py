#!/usr/bin/env python
"""Pooled connections (DATABASE_POOL, psycopg's pool) against a new connection per request (CONN_MAX_AGE=0).

A PostgreSQL 15 cluster of the benchmark's own (initdb in a temporary directory, scram-sha-256 password logins as in
production, loopback only), so that every CPU-second counted for PostgreSQL is this benchmark's: the postmaster's
reaped children (the short-lived backends of a connection per request) plus its live children. One daphne
(DEBUG=false), a signed-in developer of a small team, and two pages: the dashboard and the host list. Each mode reads
each page N times one after the other, then N times from 10 clients at once. Results: stdout (Markdown) and
bench/connections/results.json.
"""

import argparse
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
PAGES = {"dashboard": "/", "hosts": "/hosts/"}
TICKS = os.sysconf("SC_CLK_TCK")


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def cpu_seconds(pid, *, children=False):
    """utime+stime of a process (with `children`: of its reaped children instead)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    start = 13 if children else 11  # cutime, cstime are fields 16-17; utime, stime 14-15 (1-based, after the name)
    return (int(fields[start]) + int(fields[start + 1])) / TICKS


def child_pids(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


class Cluster:
    """initdb + pg_ctl as the postgres user, in a temporary directory, on a free loopback port."""

    def __init__(self):
        self.bin = Path(sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1])
        self.dir = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        self.port = free_port()
        self.password = Fernet.generate_key().decode()[:24]
        shutil.chown(self.dir, "postgres")
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password)
        shutil.chown(pwfile, "postgres")
        self.as_postgres([self.bin / "initdb", "-D", self.dir / "data", "-U", "postgres", "-A", "scram-sha-256",
                          "--pwfile", pwfile])
        self.as_postgres([self.bin / "pg_ctl", "-D", self.dir / "data", "-l", self.dir / "log", "-w", "-o",
                          f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200",
                          "start"])
        self.url = f"postgres://postgres:{self.password}@127.0.0.1:{self.port}/postgres"
        self.postmaster = int((self.dir / "data" / "postmaster.pid").read_text().split()[0])

    def as_postgres(self, args):
        subprocess.run(["runuser", "-u", "postgres", "--", *map(str, args)], check=True, stdout=subprocess.DEVNULL)

    def cpu(self):
        """Every CPU-second the cluster's processes used so far."""
        total = cpu_seconds(self.postmaster) + cpu_seconds(self.postmaster, children=True)
        for pid in child_pids(self.postmaster):
            try:
                total += cpu_seconds(pid)
            except FileNotFoundError:
                pass
        return total

    def stop(self):
        self.as_postgres([self.bin / "pg_ctl", "-D", self.dir / "data", "-m", "fast", "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)


def base_env(database_url, var_dir):
    return {
        **os.environ, "DATABASE_URL": database_url, "PORTAL_VAR_DIR": str(var_dir), "DEBUG": "false",
        "SECRET_KEY": "bench-connections-" + "k" * 40, "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "AUDIT_HMAC_KEY": "bench-connections", "AUDIT_CHECKPOINT_PATH": str(var_dir / "checkpoints.jsonl"),
        "ALLOWED_HOSTS": "127.0.0.1", "SECURE_SSL_REDIRECT": "false", "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false", "SECURE_HSTS_SECONDS": "0", "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
        "REDIS_URL": f"unix://{var_dir / 'redis.sock'}",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
    }


def prepare(env):
    """Migrate, and sign a developer of a team with a few hosts in: returns the session cookie."""
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    code = """
import django; django.setup()
from django.test import Client
from portal.services import team_create, user_create, membership_set
user = user_create(username="dev", password="correct horse battery staple")
team = team_create(name="Platform", actor=None)
membership_set(team=team, user=user, role="developer", actor=None)
client = Client()
client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
print(client.cookies["sessionid"].value)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, text=True, capture_output=True)
    if result.returncode:
        raise SystemExit(result.stderr)
    return result.stdout.strip().splitlines()[-1]


def measure(port, cookie, path, pages, clients):
    """Latencies of `pages` GETs of `path` from `clients` threads at once; (latencies, wall seconds)."""
    latencies, lock, errors = [], threading.Lock(), []
    todo = iter(range(pages))

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if next(todo, None) is None:
                    return
            started = time.perf_counter()
            conn.request("GET", path, headers={"Cookie": f"sessionid={cookie}"})
            response = conn.getresponse()
            response.read()
            elapsed = time.perf_counter() - started
            with lock:
                (latencies if response.status == 200 else errors).append(elapsed if response.status == 200
                                                                         else response.status)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"{path}: {len(errors)} errors: {errors[:5]}")
    return latencies, time.perf_counter() - started


def run_mode(name, env, cluster, cookie, pages):
    port = free_port()
    redis = subprocess.Popen([shutil.which("redis-server"), "--port", "0", "--unixsocket",
                              env["REDIS_URL"].removeprefix("unix://"), "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL)
    web_log = Path(env["PORTAL_VAR_DIR"]) / "web.log"
    web = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                            "portal.asgi:application"], cwd=ROOT, env=env, stdout=web_log.open("wb"),
                           stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 60, "daphne")
        for path in PAGES.values():
            measure(port, cookie, path, 20, 1)  # warm: Django's lazy start, the pool's first connections
        rows = []
        for clients in (1, 10):
            for page, path in PAGES.items():
                web_before, db_before = cpu_seconds(web.pid), cluster.cpu()
                latencies, wall = measure(port, cookie, path, pages, clients)
                time.sleep(0.3)  # let backends of a connection per request exit and be reaped
                web_cpu, db_cpu = cpu_seconds(web.pid) - web_before, cluster.cpu() - db_before
                latencies.sort()
                rows.append({
                    "mode": name, "page": page, "clients": clients, "pages": pages,
                    "p50_ms": round(statistics.median(latencies) * 1000, 1),
                    "p95_ms": round(latencies[int(len(latencies) * 0.95) - 1] * 1000, 1),
                    "pages_per_s": round(pages / wall, 1),
                    "web_cpu_ms": round(web_cpu / pages * 1000, 1),
                    "postgres_cpu_ms": round(db_cpu / pages * 1000, 1),
                })
                log(rows[-1])
        return rows
    except SystemExit:
        print(web_log.read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        web.terminate()
        web.wait(10)
        redis.terminate()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=200, help="page views per page, mode and concurrency")
    args = parser.parse_args()
    load_before = os.getloadavg()
    cluster = Cluster()
    var_dir = Path(tempfile.mkdtemp(prefix="bench-connections-"))
    try:
        database_url = cluster.url.rsplit("/", 1)[0] + "/portal"
        subprocess.run(["psql", cluster.url, "-qc", "CREATE DATABASE portal"], check=True)
        env = base_env(database_url, var_dir)
        cookie = prepare(env)
        rows = run_mode("a connection per request (DATABASE_POOL=false, CONN_MAX_AGE=0)",
                        {**env, "DATABASE_POOL": "false"}, cluster, cookie, args.pages)
        rows += run_mode("pooled (DATABASE_POOL, default sizes)", env, cluster, cookie, args.pages)
    finally:
        cluster.stop()
        shutil.rmtree(var_dir, ignore_errors=True)
    load_after = os.getloadavg()
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": platform.node(),
        "cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), ""), "cores": os.cpu_count(),
        "load_before": [round(x, 1) for x in load_before], "load_after": [round(x, 1) for x in load_after],
        "rows": rows,
    }
    (HERE / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['date']}, {result['cpu']} ({result['cores']} cores), load {result['load_before'][0]} before, "
          f"{result['load_after'][0]} after\n")
    print("| mode | page | clients | p50 | p95 | pages/s | web CPU/page | PostgreSQL CPU/page |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['page']} | {r['clients']} | {r['p50_ms']} ms | {r['p95_ms']} ms | {r['pages_per_s']} "
              f"| {r['web_cpu_ms']} ms | {r['postgres_cpu_ms']} ms |")


if __name__ == "__main__":
    main()
