#!/usr/bin/env python
"""The live-log benchmark, against a real daphne, Redis and PostgreSQL. Run it with bench/logs/run.

Measures:
  1. ingest: lines per second into one run's log from one worker process (this one), through LogSink with publishing on:
     from a Python generator, and from a child process's stdout read the way builds.runner reads podman;
  2. latency: from a line written by the runner to its arrival at each of 100 websocket viewers, at 1,000 lines/s;
  3. fan-out: 500 viewers of one run, counting lost and duplicated lines;
  4. a 1,000,000-line log: the first screen in Chromium (Playwright) and server-side searches with their exact counts.

It starts its own redis-server and daphne, and uses DATABASE_URL (default: a database portal_bench_logs on the local
PostgreSQL, created if missing). Results go to stdout as Markdown and to bench/logs/results.json.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/portal_bench_logs"


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


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the services under test -----------------------------------------------------------------------------------------


def ensure_database(url):
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


class Services:
    def __init__(self, database_url):
        self.dir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
        self.database_url = database_url
        self.redis_socket = self.dir / "redis.sock"
        self.redis_url = f"unix://{self.redis_socket}"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.processes = []
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": self.redis_url,
            "PORTAL_VAR_DIR": str(self.dir / "var"),
            "DEBUG": "false",
            "SECRET_KEY": "bench-logs-" + "k" * 50,
            "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "AUDIT_HMAC_KEY": "bench-logs-audit-" + "k" * 32,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "false",
            "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false",
            "SECURE_HSTS_SECONDS": "0",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            # The benchmark's hundreds of viewers are one user: lift the per-user cap on open log sockets.
            "RUN_LOG_SOCKETS_PER_USER": "100000",
        }

    def start_redis(self):
        binary = shutil.which("redis-server")
        if binary is None:
            from portal.demo.management.commands.run_portal import embedded_redis_server

            binary = embedded_redis_server()
        self.redis = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", str(self.redis_socket), "--unixsocketperm", "700", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes.append(self.redis)
        wait_for(self.redis_socket.exists, 10, "redis")

    def start_daphne(self, count=1):
        """`count` daphne processes, each on its own port, as compose.yaml's web replicas behind the proxy."""
        self.ports = [self.port] + [free_port() for _ in range(count - 1)]
        self.daphnes = []
        for index, port in enumerate(self.ports):
            logfile = open(self.dir / f"daphne-{index + 1}.log", "wb")  # noqa: SIM115 - lives as long as the process
            process = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                        "portal.asgi:application"], cwd=ROOT, env=self.env, stdout=logfile,
                                       stderr=subprocess.STDOUT)
            self.processes.append(process)
            self.daphnes.append(process)
        self.daphne = self.daphnes[0]

        def answers(port):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return True
            except OSError:
                return False

        for port in self.ports:
            wait_for(lambda port=port: answers(port), 120, "daphne")

    def stop(self):
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def cpu_seconds(pid):
    """User + system CPU seconds a process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def setup_django(services):
    os.environ.update({k: v for k, v in services.env.items() if k not in ("DEBUG",)})
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("collectstatic", "--noinput", verbosity=0)


def make_viewer():
    """A team, a viewer in it, and the viewer's session cookie."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from portal.models import Membership, Team, User

    team, _ = Team.objects.get_or_create(slug="bench-logs", defaults={"name": "Bench logs"})
    user, created = User.objects.get_or_create(username="bench-viewer")
    if created:
        user.set_password("bench-viewer-password")
        user.save()
    Membership.objects.get_or_create(team=team, user=user, defaults={"role": "viewer"})
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return team, user, f"{settings.SESSION_COOKIE_NAME}={session.session_key}", session.session_key


def new_run(team, title):
    from portal import services

    run = services.run_create(kind="build", title=title, team=team)
    services.run_start(run)
    return run


def finish(run, sink):
    from portal import live, services

    sink.close()
    services.run_finish(run, status="succeeded", log_lines=sink.last_seq)
    live.wait_published(10)


# --- 1. ingest -------------------------------------------------------------------------------------------------------


def bench_ingest(team, lines, pipe_lines):
    from bench.logs.samples import filler
    from portal import live
    from portal.logsink import LogSink

    run = new_run(team, f"bench: {lines:,} lines")
    sink = LogSink(run)
    started = time.perf_counter()
    for line in filler(lines):
        sink.write(line)
    finish(run, sink)
    generator_seconds = time.perf_counter() - started

    # The way a runner reads a tool's output: bytes from a pipe, split into lines, written line by line.
    try:
        from builds.runner import LineSplitter
    except ImportError:  # the builds app moved it: split here the same way
        LineSplitter = None
    piped = new_run(team, f"bench: {pipe_lines:,} lines through a pipe")
    child = subprocess.Popen([sys.executable, "-c",
                              "import sys; from bench.logs.samples import filler\n"
                              f"sys.stdout.writelines(line + '\\n' for line in filler({pipe_lines}))"],
                             cwd=ROOT, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    sink = LogSink(piped)
    started = time.perf_counter()
    splitter = LineSplitter() if LineSplitter else None
    buffer = b""
    while data := os.read(child.stdout.fileno(), 1 << 16):
        if splitter:
            for line in splitter.feed(data):
                sink.write(line)
        else:
            buffer += data
            *whole, buffer = buffer.split(b"\n")
            for line in whole:
                sink.write(line.decode("utf-8", "replace"))
        sink.poll()
    child.wait()
    finish(piped, sink)
    pipe_seconds = time.perf_counter() - started
    live.wait_published(30)
    size = sum(len(line) + 1 for line in filler(1000)) / 1000
    return {
        "run": run.pk,
        "lines": lines,
        "bytes_per_line": round(size),
        "generator_lines_per_s": round(lines / generator_seconds),
        "generator_seconds": round(generator_seconds, 2),
        "pipe_lines": pipe_lines,
        "pipe_lines_per_s": round(pipe_lines / pipe_seconds),
        "pipe_seconds": round(pipe_seconds, 2),
    }


# --- 2 and 3. viewers ------------------------------------------------------------------------------------------------


def bench_viewers(services, team, cookie, *, viewers, lines, rate, processes=1, web=1, poll_interval=None):
    """`viewers` websocket clients (spread over `processes` client processes, each on one of the first `web` daphne
    processes in turn) watch a run written at `rate` lines/s. With `poll_interval`, they poll the lines endpoint over
    HTTP instead (the reference). Also returns the CPU seconds each daphne process, Redis and the clients used."""
    from portal.logsink import LogSink

    run = new_run(team, f"bench: {viewers} viewers")
    clients = []
    per = [viewers // processes + (1 if i < viewers % processes else 0) for i in range(processes)]
    for index, count in enumerate(per):
        port = services.ports[index % web]
        if poll_interval:
            target = ["--poll", f"http://127.0.0.1:{port}/runs/{run.pk}/log/lines/", "--interval", str(poll_interval)]
        else:
            target = ["--url", f"ws://127.0.0.1:{port}/ws/runs/{run.pk}/"]
        clients.append(subprocess.Popen(
            [sys.executable, str(HERE / "viewers.py"), *target, "--cookie", cookie, "--count", str(count),
             "--expect", str(lines), "--timeout", str(lines / rate + 300)],
            stdout=subprocess.PIPE, text=True, cwd=ROOT))
    services.processes.extend(clients)  # stopped with the services if the benchmark is
    for client in clients:
        ready = client.stdout.readline().strip()
        if ready != "READY":
            raise SystemExit(f"viewers did not get ready: {ready!r}")
    how = f"polling every {poll_interval} s" if poll_interval else "websockets"
    log(f"  {viewers} viewers ({how}) on {web} web process(es); writing {lines:,} lines at {rate:,}/s")
    watched = {f"web{i + 1}": p.pid for i, p in enumerate(services.daphnes[:web])}
    watched.update({"redis": services.redis.pid, "writer": os.getpid()})
    watched.update({f"clients{i + 1}": c.pid for i, c in enumerate(clients)})
    cpu_before = {name: cpu_seconds(pid) for name, pid in watched.items()}
    sink = LogSink(run)
    pad = "x" * 60
    started = time.perf_counter()
    for i in range(lines):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sink.write(f"line {i + 1} {pad}")
    sink.poll()
    finish(run, sink)
    write_seconds = time.perf_counter() - started
    cpu = {name: round(cpu_seconds(pid) - cpu_before[name], 2) for name, pid in watched.items()}
    results = [json.loads(client.stdout.readline()) for client in clients]
    # Until every viewer had every line: the work the write left behind on a busy machine counts too (the viewers
    # report their own, from READY to their last line).
    cpu_total = {name: round(cpu_seconds(pid) - cpu_before[name], 2) for name, pid in watched.items()
                 if not name.startswith("clients")}
    cpu_total.update({f"clients{i + 1}": r.get("cpu_seconds") for i, r in enumerate(results)})
    delivered_seconds = time.perf_counter() - started
    for client in clients:
        client.wait(30)
    merged = {key: sum(r[key] for r in results) for key in ("viewers", "complete", "lost", "duplicated", "skips",
                                                            "reconnects", "samples")}
    # Percentiles of the whole population: the worst of the client processes' (they see the same stream).
    for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
        merged[key] = max(r[key] for r in results if r[key] is not None)
    merged["failures"] = {}
    for r in results:
        for reason, count in r.get("failures", {}).items():
            merged["failures"][reason] = merged["failures"].get(reason, 0) + count
    merged.update({"lines": lines, "rate": rate, "write_seconds": round(write_seconds, 2), "run": run.pk,
                   "web_processes": web, "client_processes": processes, "transport": how,
                   "cpu_seconds_while_writing": cpu, "cpu_seconds_until_delivered": cpu_total,
                   "delivered_seconds": round(delivered_seconds, 2), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                   "load_before": os.getloadavg()})
    return merged


# --- 4. a million lines ----------------------------------------------------------------------------------------------


def bench_big_log(services, run_id, lines, session_key, repeats=5):
    import requests
    from playwright.sync_api import sync_playwright

    out = {"run": run_id, "lines": lines, "first_screen_ms": [], "first_screen_wall_ms": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                                          "--disable-background-networking", "--disable-component-update"])
        for i in range(repeats + 1):
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.add_cookies([{"name": "sessionid", "value": session_key, "domain": "127.0.0.1", "path": "/"}])
            page = context.new_page()
            started = time.perf_counter()
            page.goto(f"{services.base}/runs/{run_id}/")
            page.wait_for_selector("#log[data-ready]")
            wall = (time.perf_counter() - started) * 1000
            ready = page.evaluate("performance.getEntriesByName('log:ready')[0].startTime")
            last_visible = page.evaluate(
                "(seq) => { const r = document.getElementById('L' + seq).getBoundingClientRect();"
                " const v = document.getElementById('log').getBoundingClientRect();"
                " return r.top >= v.top && r.bottom <= v.bottom + 1 && r.bottom <= window.innerHeight; }", lines)
            if not last_visible:
                raise SystemExit("the last line is not on the first screen")
            if i == 0:
                out["cold_first_screen_ms"] = round(ready)
            else:
                out["first_screen_ms"].append(round(ready))
                out["first_screen_wall_ms"].append(round(wall))
            if i == repeats:
                shot = ROOT / "test-artifacts" / "bench-logs-first-screen.png"
                shot.parent.mkdir(exist_ok=True)
                page.screenshot(path=str(shot))
                out["screenshot"] = str(shot.relative_to(ROOT))
            context.close()
        browser.close()
    out["first_screen_median_ms"] = round(statistics.median(out["first_screen_ms"]))
    out["first_screen_max_ms"] = max(out["first_screen_ms"])

    # filler(): line i reads "{i:>9} compiling module_{i % 997:03d}.c -> module.o xxx..."
    queries = {
        "module_123.c": sum(1 for i in range(1, lines + 1) if i % 997 == 123),
        "MODULE_123.C": sum(1 for i in range(1, lines + 1) if i % 997 == 123),
        f"{lines - 1:>9} compiling": 1,
        "compiling": lines,
        "segfault": 0,
    }
    http = requests.Session()
    http.cookies.set("sessionid", session_key, domain="127.0.0.1")
    out["searches"] = []
    for query, expected in queries.items():
        times = []
        for _ in range(3):
            started = time.perf_counter()
            response = http.get(f"{services.base}/runs/{run_id}/log/search/", params={"q": query}, timeout=60)
            times.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            found = response.json()
            if found["count"] != expected:
                raise SystemExit(f"search {query!r}: count {found['count']}, expected {expected}")
        out["searches"].append({"q": query, "count": expected, "median_ms": round(statistics.median(times)),
                                "max_ms": round(max(times))})
    return out


# --- report ----------------------------------------------------------------------------------------------------------


def machine():
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        memory = f"{int(mem.split()[1]) // 1024 // 1024} GiB"
    except (OSError, StopIteration):
        memory = "unknown"
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0]
    redis_version = subprocess.run([shutil.which("redis-server") or "redis-server", "--version"], capture_output=True,
                                   text=True).stdout.split()[2].removeprefix("v=")
    chromium = subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True, text=True).stdout.strip()
    import channels
    import daphne
    import django

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu, "cores": os.cpu_count(), "memory": memory, "os": platform.platform(),
        "python": platform.python_version(), "django": django.__version__, "channels": channels.__version__,
        "daphne": daphne.__version__, "postgresql": pg, "redis": redis_version, "chromium": chromium,
        "load_before": os.getloadavg(),
    }


def spread_rows(results, ok):
    rows = []
    for key, target in (("spread", "≤ 250 ms"), ("polling", "(the reference)")):
        r = results.get(key)
        if not r:
            continue
        cpu = r["cpu_seconds_while_writing"]
        web = " + ".join(str(cpu[f"web{i + 1}"]) for i in range(r["web_processes"]))
        met = ok(r["p95_ms"] <= 250 and r["lost"] == 0 and r["duplicated"] == 0) if key == "spread" else ""
        rows.append((f"{r['viewers']} viewers over {r['web_processes']} web processes, {r['transport']}, "
                     f"{r['rate']:,} lines/s: p95 (p50, p99)", target,
                     f"{r['p95_ms']} ms ({r['p50_ms']}, {r['p99_ms']}); lost / duplicated {r['lost']} / "
                     f"{r['duplicated']}; web CPU {web} s in {r['write_seconds']} s", met))
    return rows


def report(results):
    m = results["machine"]
    ing, lat, fan, big = results["ingest"], results["latency"], results["fanout"], results["big_log"]

    def ok(good):
        return "yes" if good else "**NO**"

    rows = [
        ("Ingest, one worker process (generator → LogSink)", "≥ 50,000 lines/s",
         f"{ing['generator_lines_per_s']:,} lines/s ({ing['lines']:,} lines of ~{ing['bytes_per_line']} B)",
         ok(ing["generator_lines_per_s"] >= 50000)),
        ("Ingest, one worker process (child's stdout → LogSink)", "≥ 50,000 lines/s",
         f"{ing['pipe_lines_per_s']:,} lines/s ({ing['pipe_lines']:,} lines)", ok(ing["pipe_lines_per_s"] >= 50000)),
        (f"Latency, {lat['viewers']} viewers at {lat['rate']:,} lines/s: p95", "≤ 100 ms", f"{lat['p95_ms']} ms",
         ok(lat["p95_ms"] <= 100)),
        (f"Latency, {lat['viewers']} viewers at {lat['rate']:,} lines/s: p99", "≤ 250 ms", f"{lat['p99_ms']} ms",
         ok(lat["p99_ms"] <= 250)),
        (f"{fan['viewers']} viewers, {fan['lines']:,} lines each: lost / duplicated", "0 / 0",
         f"{fan['lost']} / {fan['duplicated']} ({fan['complete']} of {fan['viewers']} complete)",
         ok(fan["lost"] == 0 and fan["duplicated"] == 0 and fan["complete"] == fan["viewers"])),
        *spread_rows(results, ok),
        (f"{big['lines']:,}-line log: first screen in Chromium (median of {len(big['first_screen_ms'])}, max)",
         "≤ 1 s",
         f"{big['first_screen_median_ms']} ms, max {big['first_screen_max_ms']} ms (cold {big['cold_first_screen_ms']} ms)",
         ok(big["first_screen_max_ms"] <= 1000)),
    ]
    for search in big["searches"]:
        rows.append((f"{big['lines']:,}-line log: search {search['q']!r} (exact count {search['count']:,})", "≤ 1 s",
                     f"{search['median_ms']} ms (max {search['max_ms']} ms)", ok(search["max_ms"] <= 1000)))
    lines = [
        f"Run on {m['date']}: {m['cpu']}, {m['cores']} cores, {m['memory']} RAM, {m['os']}; Python {m['python']}, "
        f"Django {m['django']}, Channels {m['channels']}, daphne {m['daphne']} (one process), PostgreSQL {m['postgresql']}, "
        f"Redis {m['redis']}, {m['chromium']}. Everything (database, Redis, daphne, the writer and the viewers) shares "
        f"the same machine; load average {m['load_before'][0]:.1f} before, {m['load_after'][0]:.1f} after.",
        "",
        "| measure | target | result | met |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        f"Latency detail ({lat['samples']:,} line arrivals): p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms, "
        f"p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms. With {fan['viewers']} viewers: p50 {fan['p50_ms']} ms, "
        f"p95 {fan['p95_ms']} ms, p99 {fan['p99_ms']} ms, max {fan['max_ms']} ms; {fan['reconnects']} reconnects.",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines of the big log (also the ingest run)")
    parser.add_argument("--pipe-lines", type=int, default=300_000)
    parser.add_argument("--latency-viewers", type=int, default=100)
    parser.add_argument("--latency-seconds", type=int, default=20)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--fanout-viewers", type=int, default=500)
    parser.add_argument("--fanout-lines", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--web-processes", type=int, default=2, help="daphne processes for the spread and polling parts")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="seconds between polls, for the polling part")
    parser.add_argument("--only", default="ingest,latency,fanout,spread,polling,big",
                        help="which parts (big needs ingest); results of a subset are merged into results.json")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    # Stopped with SIGTERM (timeout, kill): stop daphne, Redis and the viewers on the way out, as on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    database_url = os.environ.get("BENCH_DATABASE_URL") or DEFAULT_DATABASE_URL
    if not database_url.startswith("postgres"):
        raise SystemExit("bench/logs runs against PostgreSQL: set BENCH_DATABASE_URL=postgres://...")
    ensure_database(database_url)
    services = Services(database_url)
    try:
        services.start_redis()
        setup_django(services)
        services.start_daphne(args.web_processes if parts & {"spread", "polling"} else 1)
        team, _user, cookie, session_key = make_viewer()
        results = {}
        from django.db import connection

        results["machine"] = machine()
        if "ingest" in parts:
            log(f"ingest: {args.lines:,} lines, then {args.pipe_lines:,} through a pipe")
            results["ingest"] = bench_ingest(team, args.lines, args.pipe_lines)
            log(f"  {results['ingest']}")
        if "latency" in parts:
            log(f"latency: {args.latency_viewers} viewers")
            results["latency"] = bench_viewers(services, team, cookie, viewers=args.latency_viewers,
                                               lines=args.rate * args.latency_seconds, rate=args.rate)
            log(f"  {results['latency']}")
        if "fanout" in parts:
            log(f"fan-out: {args.fanout_viewers} viewers")
            results["fanout"] = bench_viewers(services, team, cookie, viewers=args.fanout_viewers,
                                              lines=args.fanout_lines, rate=args.rate, processes=2)
            log(f"  {results['fanout']}")
        if "spread" in parts:
            log(f"spread: {args.fanout_viewers} viewers over {args.web_processes} web processes")
            results["spread"] = bench_viewers(services, team, cookie, viewers=args.fanout_viewers,
                                              lines=args.fanout_lines, rate=args.rate, processes=args.web_processes,
                                              web=args.web_processes)
            log(f"  {results['spread']}")
        if "polling" in parts:
            log(f"polling (the reference): {args.fanout_viewers} viewers over {args.web_processes} web processes")
            results["polling"] = bench_viewers(services, team, cookie, viewers=args.fanout_viewers,
                                               lines=args.fanout_lines, rate=args.rate, processes=args.web_processes,
                                               web=args.web_processes, poll_interval=args.poll_interval)
            log(f"  {results['polling']}")
        if "big" in parts and "ingest" in parts:
            log(f"a {args.lines:,}-line log in the browser, and searches")
            results["big_log"] = bench_big_log(services, results["ingest"]["run"], args.lines, session_key,
                                               args.repeats)
            log(f"  {results['big_log']}")
        results["machine"]["load_after"] = os.getloadavg()
        connection.close()
        path = HERE / "results.json"
        if not parts >= {"ingest", "latency", "fanout", "big"} and path.exists():
            # A part run alone replaces that part's results only; each part says when it ran.
            results = {**json.loads(path.read_text()), **{k: v for k, v in results.items() if k != "machine"},
                       f"machine_{'_'.join(sorted(parts))}": results["machine"]}
        path.write_text(json.dumps(results, indent=2) + "\n")
        if parts >= {"ingest", "latency", "fanout", "big"}:
            print(report(results))
        else:
            print(json.dumps({k: results[k] for k in parts if k in results}, indent=2))
    finally:
        services.stop()


if __name__ == "__main__":
    main()
