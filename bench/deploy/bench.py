"""The production stack under load: compose.yaml's services (built and started as `make deploy-test` does), a team of
10,000 hosts, and locust on the same machine.

  1. through the proxy (Caddy, TLS) to 2 web replicas: 50 users who each wait 1-3 s between pages (every page, then
     without the fleet view, whose 10,000-host render holds its replica for seconds), then users with no wait, in
     steps, for the most requests per second with p95 under 1 s;
  2. the same on one daphne (web-2 stopped), with no proxy: locust talks to the replica's port directly.

Prints a table per run and writes bench/deploy/results.json. Usage: bench/deploy/run [--seconds 60]

Pages at 100,000 hosts: `bench/deploy/run --hosts 100000 --users 10,50 --no-single` (the same pages, tool and proxy;
waiting runs of 10 and of 50 users; results-100000-hosts.json).
"""

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django  # noqa: E402

django.setup()

from pages import PAGES  # noqa: E402  (this file's directory is first on sys.path)

from deploy.tests.stack import Stack  # noqa: E402

HERE = Path(__file__).resolve().parent
USERNAME = "bench-viewer"

SEED = """
from datetime import timedelta
from django.utils import timezone
from builds.releases.policy import stages_ensure_default
from hosts.models import Host, HostState
from portal.models import Membership, Team, User
team = Team.objects.create(name="Bench", slug="bench")
stages_ensure_default(team=team)
states = [HostState.UP_TO_DATE, HostState.DRIFT, HostState.UPDATE_STAGED, HostState.UNREACHABLE, HostState.RUNNING]
stages = list(team.stages.all())
now = timezone.now()
# The hosts are rows, not machines: none is due for a poll during the run, so every scenario reads the same states.
Host.objects.bulk_create([
    Host(team=team, name=f"list-{{i:05d}}", address=f"10.{{i // 65536}}.{{i // 256 % 256}}.{{i % 256}}",
         stage=stages[i % len(stages)], state=states[i % len(states)], drifting=i % 5 == 1,
         labels=f"rack={{i % 40}} {{'web' if i % 3 else 'db'}}", booted_digest="sha256:" + f"{{i:064x}}",
         booted_version="1.0", status_at=now, host_key="ssh-ed25519 AAAA", next_poll_at=now + timedelta(days=1))
    for i in range({hosts})
], batch_size=2000)
user = User.objects.create_user({USERNAME!r}, "bench@example.com")
Membership.objects.create(user=user, team=team, role="viewer")
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
keys = []
for _ in range(60):
    session = SessionStore()
    session.update({{SESSION_KEY: str(user.pk), BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
                    HASH_SESSION_KEY: user.get_session_auth_hash()}})
    session.create()
    keys.append(session.session_key)
# What beat does within a minute (fold the triggers' +1 rows of the bulk insert into one row per key), and the
# planner's statistics for the rows just made, so that no page is measured against a state that lasts a minute.
from hosts.services import tallies_compact
tallies_compact()
from django.db import connection
connection.cursor().execute("VACUUM ANALYZE")
print(Host.objects.filter(team=team).count(), ",".join(keys))
"""


def locust(stack, host, *, sessions, users, wait, seconds, direct=False, fleet_view=True):
    """One headless locust run; returns its rows (per page and aggregated) from locust's CSV."""
    with tempfile.TemporaryDirectory(prefix="bench-locust-") as directory:
        prefix = Path(directory) / "run"
        env = {**os.environ, "BENCH_SESSIONS": sessions, "BENCH_CA": str(stack.ca), "BENCH_WAIT": wait}
        if direct:
            env["BENCH_FORWARDED_PROTO"] = "https"  # what the proxy tells daphne
        if not fleet_view:
            env["BENCH_WITHOUT_FLEET_VIEW"] = "1"
        subprocess.run([sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless",
                        "--host", host, "-u", str(users), "-r", str(max(users // 5, 1)), "-t", f"{seconds}s",
                        "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING"],
                       env=env, check=False, capture_output=True, text=True, timeout=seconds + 300)
        with open(f"{prefix}_stats.csv") as f:
            rows = list(csv.DictReader(f))

    def number(value):
        return float(value) if value not in ("", "N/A") else 0.0

    return [{"page": row["Name"], "requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
             "rps": round(number(row["Requests/s"]), 1), "p50_ms": number(row["50%"]), "p95_ms": number(row["95%"]),
             "p99_ms": number(row["99%"])} for row in rows]


def settle(stack, ports):
    """Waits until every replica answers a page at once again: requests a run left behind (locust stops waiting, the
    server does not) would otherwise land on the next run."""
    import urllib.request

    deadline = time.monotonic() + 300
    for port in ports:
        while time.monotonic() < deadline:
            started = time.monotonic()
            request = urllib.request.Request(f"http://localhost:{port}/login/", headers={"X-Forwarded-Proto": "https"})
            # Reviewed: an http:// URL of the stack this benchmark started on localhost.
            with urllib.request.urlopen(request, timeout=300) as response:  # nosec B310
                response.read()
            if time.monotonic() - started < 0.5:
                break
            time.sleep(2)


def show(title, rows):
    print(f"\n{title}")
    print(f"  {'page':40} {'requests':>8} {'fail':>5} {'req/s':>6} {'p50':>6} {'p95':>6} {'p99':>6}")
    for row in rows:
        print(f"  {row['page']:40} {row['requests']:8} {row['failures']:5} {row['rps']:6} {row['p50_ms']:6.0f} "
              f"{row['p95_ms']:6.0f} {row['p99_ms']:6.0f}", flush=True)


def cpu_ns(stack, service):
    """CPU time the service's container has used so far (its cgroup's cpuacct.usage, in ns)."""
    path = stack.podman("inspect", "--format", "{{.State.CgroupPath}}", stack.container(service)).stdout.strip()
    for root in ("/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/cpu,cpuacct"):
        usage = Path(root + path) / "cpuacct.usage"
        if usage.exists():
            return int(usage.read_text())
    stat = (Path("/sys/fs/cgroup") / path.lstrip("/") / "cpu.stat").read_text()  # cgroup v2
    return int(stat.split("usage_usec ")[1].split()[0]) * 1000


def cost_per_page(stack, sessions, requests=20):
    """CPU per page, which the machine's other load does not change much (the latencies above it does): `requests`
    pages one after the other through the proxy, and the CPU each service's container used meanwhile."""
    import ssl
    import urllib.request

    context = ssl.create_default_context(cafile=str(stack.ca))
    cookie = f"sessionid={sessions.split(',')[0]}"
    services = ("proxy", "web", "web-2", "postgres", "redis")
    rows = []
    for name, path in PAGES.items():
        settle(stack, (stack.ports["web1"], stack.ports["web2"]))
        before = {service: cpu_ns(stack, service) for service in services}
        started = time.monotonic()
        for _ in range(requests):
            request = urllib.request.Request(stack.url + path, headers={"Cookie": cookie})
            # Reviewed: the https:// URL of the stack this benchmark started (stack.url).
            with urllib.request.urlopen(request, context=context, timeout=300) as response:  # nosec B310
                body = response.read()
        wall = (time.monotonic() - started) / requests
        used = {service: (cpu_ns(stack, service) - before[service]) / requests / 1e6 for service in services}
        rows.append({"page": name, "bytes": len(body), "wall_ms": round(wall * 1000),
                     "web_cpu_ms": round(used["web"] + used["web-2"], 1), "postgres_cpu_ms": round(used["postgres"], 1),
                     "proxy_cpu_ms": round(used["proxy"], 1), "redis_cpu_ms": round(used["redis"], 1)})
        print(f"  {name:40} {rows[-1]}", flush=True)
    return rows


def quiet(stack, *, services=("web", "web-2", "worker-hosts", "postgres"), cores=0.3, timeout=300):
    """Waits until the stack's own work after start-up is done (the services below use under `cores` of CPU over 10 s),
    so that it does not land on the first scenario. Returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = {service: cpu_ns(stack, service) for service in services}
        time.sleep(10)
        used = sum(cpu_ns(stack, service) - before[service] for service in services) / 10e9
        if used < cores:
            break
    return round(time.monotonic() - started)


def scenarios(stack, host, *, sessions, seconds, direct, label, ports, waiting_users=(50,)):
    results = {}
    for users in waiting_users:
        for fleet_view in (True, False):
            pages = "every page" if fleet_view else "without the fleet view"
            settle(stack, ports)
            rows = locust(stack, host, sessions=sessions, users=users, wait="1-3", seconds=seconds, direct=direct,
                          fleet_view=fleet_view)
            show(f"{label}: {users} users, 1-3 s between pages, {seconds} s, {pages}", rows)
            results[f"{users} users, wait 1-3 s, {pages}"] = rows
    steps = []
    for users in (2, 5, 10, 20):
        settle(stack, ports)
        rows = locust(stack, host, sessions=sessions, users=users, wait="0", seconds=max(seconds // 2, 20),
                      direct=direct, fleet_view=False)
        show(f"{label}: {users} users, no wait, without the fleet view", rows)
        total = rows[-1]
        steps.append({"users": users, **{k: total[k] for k in ("rps", "p50_ms", "p95_ms", "failures")},
                      "pages": rows})
    results["no wait, in steps, without the fleet view"] = steps
    under = [step for step in steps if step["p95_ms"] < 1000 and step["failures"] == 0]
    results["most req/s with p95 < 1 s"] = max(under, key=lambda s: s["rps"])["rps"] if under else None
    print(f"{label}: most req/s with p95 < 1 s: {results['most req/s with p95 < 1 s']}", flush=True)
    return results


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    return {"cpus": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "load_average_at_start": Path("/proc/loadavg").read_text().split()[0]}


def main():
    report = run()
    report["machine"]["load_average_at_end"] = Path("/proc/loadavg").read_text().split()[0]
    # A full run with the shipped settings is the record; --set and --cpu-only runs go beside it, and a fleet of
    # another size has its own file.
    name = "results.json" if "one daphne, no proxy" in report and "settings" not in report else "results-cpu.json"
    if report["hosts"] != 10_000:
        name = f"results-{report['hosts']}-hosts.json"
    (HERE / name).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["machine"]))


def run():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60, help="length of the 50-user run (steps take half)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for every portal service, e.g. CONN_MAX_AGE=60 (repeatable)")
    parser.add_argument("--cpu-only", action="store_true", help="measure the CPU per page only, no load")
    parser.add_argument("--hosts", type=int, default=10_000, help="hosts of the viewers' team (default 10,000)")
    parser.add_argument("--users", default="50", help="users of the runs where each waits 1-3 s between pages, "
                                                      "comma-separated (default 50)")
    parser.add_argument("--no-single", action="store_true", help="leave out the runs on one daphne with no proxy")
    args = parser.parse_args()
    waiting_users = [int(users) for users in args.users.split(",")]
    report = {"machine": machine(), "hosts": args.hosts}
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as directory:
        stack = Stack(Path(directory))
        stack.write_configuration()
        if args.set:
            with stack.env_file.open("a") as env_file:
                env_file.write("".join(f"{setting}\n" for setting in args.set))
            report["settings"] = args.set
        stack.build_images()
        try:
            stack.up()
            hosts, sessions = stack.shell(SEED.format(USERNAME=USERNAME, hosts=args.hosts)).split()
            print("hosts:", hosts, flush=True)
            report["seconds until the stack was quiet after start"] = waited = quiet(stack)
            locust(stack, stack.url, sessions=sessions, users=20, wait="1-3", seconds=30)  # warm-up, not recorded
            print(f"quiet after {waited} s, then a 30 s warm-up", flush=True)
            print("\nCPU per page, one page at a time through the proxy:", flush=True)
            report["CPU per page"] = cost_per_page(stack, sessions)
            if args.cpu_only:
                return report
            report["through the proxy, 2 web replicas"] = scenarios(
                stack, stack.url, sessions=sessions, seconds=args.seconds, direct=False, label="proxy + 2 replicas",
                ports=(stack.ports["web1"], stack.ports["web2"]), waiting_users=waiting_users)
            if args.no_single:
                return report
            stack.podman("stop", stack.container("web-2"))
            report["one daphne, no proxy"] = scenarios(
                stack, f"http://localhost:{stack.ports['web1']}", sessions=sessions, seconds=args.seconds, direct=True,
                label="one daphne", ports=(stack.ports["web1"],), waiting_users=waiting_users)
        finally:
            stack.down()
    return report


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"bench/deploy: {time.monotonic() - started:.0f} s")
