"""The fleet benchmark: poll 1,000 hosts and report wall time, portal CPU and peak memory, with no host lost.

Targets, all on loopback and sharing this machine's cores with the portal:
- `simulator`: `manage.py simulate_fleet --hosts N --register` in its own process (N asyncssh servers, one event loop);
- `sshd`: 4 real OpenSSH sshd processes serving a scripted `bootc` (a 2.6 KB status document), N host rows over them;
- `ansible`: the reference, `ansible all -m command -a 'bootc status --format=json' -f 50` (ansible-core from PyPI in a
  throwaway venv under /tmp) against the same sshd fleet, with fresh connections and strict host keys like the portal's;
- `list`: the host list with 10,000 hosts: first page, a deep page, and filtered pages, through Django's test client.

"Portal CPU" is the CPU time of this process (the poller's threads, paramiko, parsing, PostgreSQL writes); the servers'
CPU is reported apart. Round 1 reads every host for the first time (a snapshot and a timeline event each); round 2 is
the steady state (statuses unchanged: one shared UPDATE).

    bench/fleet/run                       simulator, sshd, list (about 2 minutes)
    bench/fleet/run --targets ansible     the ansible reference (about 4 minutes)
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
DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_bench_hosts")
ANSIBLE_VENV = Path(os.environ.get("BENCH_ANSIBLE_VENV", Path(tempfile.gettempdir()) / "portal-bench-ansible"))


def setup_django(migrate=True):
    os.environ["DATABASE_URL"] = DATABASE_URL
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    # Fixed, so its keys decrypt the last run's rows.
    os.environ.setdefault("PORTAL_VAR_DIR", str(Path(tempfile.gettempdir()) / "portal-bench-fleet-var"))
    if migrate:
        _ensure_database()
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
    import logging

    logging.getLogger("asyncssh").setLevel(logging.WARNING)


def _ensure_database():
    import psycopg

    name = DATABASE_URL.rsplit("/", 1)[1]
    admin = DATABASE_URL.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def proc_cpu(pid, children=True):
    """utime+stime (+ waited-for children) of a process, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def bench_team():
    from builds.releases.policy import stages_ensure_default
    from hosts.models import Host, TeamSSHKey
    from hosts.services import team_key_ensure
    from portal.models import Team

    team, _ = Team.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    stages_ensure_default(team=team)
    Host.objects.filter(team=team).delete()
    TeamSSHKey.objects.filter(team=team).delete()  # a fresh key each run (and never one encrypted with a lost key)
    return team, team_key_ensure(team=team)


def poll_rounds(host_ids, concurrency, rounds, server_pids=()):
    """Poll in a fresh child process, as a Celery worker would: its CPU and memory are the portal's, nothing else."""
    ids_file = Path(tempfile.mkstemp(prefix="bench-fleet-ids-")[1])
    ids_file.write_text(json.dumps(list(host_ids)))
    results = []
    try:
        for number in range(1, rounds + 1):
            server_cpu = sum(proc_cpu(pid) for pid in server_pids)
            done = subprocess.run([sys.executable, __file__, "--poll-child", str(ids_file), "--concurrency",
                                   str(concurrency)], capture_output=True, text=True, env=os.environ.copy())
            if done.returncode != 0:
                raise SystemExit(done.stdout + done.stderr)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result["round"] = number
            result["server_cpu_s"] = round(sum(proc_cpu(pid) for pid in server_pids) - server_cpu, 2)
            results.append(result)
            print(f"  round {number}: {json.dumps(result)}", flush=True)
    finally:
        ids_file.unlink(missing_ok=True)
    return results


def poll_child(ids_file, concurrency):
    """The measured part: a process that has set Django up, polls the hosts once, and reports."""
    from hosts import poller
    from hosts.models import Host

    host_ids = json.loads(Path(ids_file).read_text())
    Host.objects.filter(pk__in=host_ids[:1]).exists()  # connect to the database before measuring
    baseline = rss_mb()
    cpu, wall = time.process_time(), time.monotonic()
    counts = poller.poll_hosts(host_ids, concurrency=concurrency)
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    read = Host.objects.filter(pk__in=host_ids, last_error="").exclude(status_at=None).count()
    print(json.dumps({
        "hosts": len(host_ids), "wall_s": round(wall, 2), "portal_cpu_s": round(cpu, 2),
        "cpu_ms_per_host": round(cpu * 1000 / len(host_ids), 2), "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(peak_mb(), 1), "poll_rss_growth_mb": round(peak_mb() - baseline, 1), "counts": counts,
        "lost": len(host_ids) - counts["ok"] - counts["changed"], "hosts_with_status": read,
    }))


def run_simulator(args):
    from django.conf import settings

    from hosts.models import Host

    team, _ = bench_team()
    base_port = args.base_port
    state_dir = tempfile.mkdtemp(prefix="bench-fleet-sim-")
    env = {**os.environ, "DATABASE_URL": DATABASE_URL, "PYTHONUNBUFFERED": "1"}
    log = open(Path(state_dir) / "fleet.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "manage.py", "simulate_fleet", "--hosts", str(args.hosts), "--register", "--team", "bench",
         "--base-port", str(base_port), "--state-dir", state_dir, "--no-seed"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while "simulated bootc hosts" not in (Path(state_dir) / "fleet.log").read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("simulate_fleet did not start:\n" + (Path(state_dir) / "fleet.log").read_text())
            time.sleep(0.5)
        ids = list(Host.objects.filter(team=team).values_list("pk", flat=True))
        print(f"simulator: {len(ids)} hosts on ports {base_port}-{base_port + args.hosts - 1} "
              f"(poll concurrency {args.concurrency}, HOSTS_POLL_SECONDS={settings.HOSTS_POLL_SECONDS})", flush=True)
        return poll_rounds(ids, args.concurrency, args.rounds, server_pids=[process.pid])
    finally:
        process.terminate()
        process.wait(30)
        log.close()
        shutil.rmtree(state_dir, ignore_errors=True)


def status_document():
    """A 2.6 KB `bootc status --format=json` with booted, staged and rollback entries (as the simulator prints it)."""
    from hosts.simbootc import Deployment, HostState
    from hosts.simulator import SimHost, demo_digest

    class _Fleet:
        def save(self, host):
            pass

    import asyncssh

    reference = "registry.example.com/platform/web-os:prod"
    state = HostState(name="x", spec_image=reference,
                      host_key=asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode())
    state.booted = Deployment(reference, demo_digest("b"), "stream9.20250519.0", "2025-05-19T08:55:31Z")
    state.staged = Deployment(reference, demo_digest("s"), "stream9.20250602.0", "2025-06-02T09:14:07Z")
    state.rollback = Deployment(reference, demo_digest("r"), "stream9.20250428.0", "2025-04-28T07:02:10Z")
    text = SimHost(_Fleet(), state).cmd_status([])
    return text


class SshdFleet:
    def __init__(self, team_key, count=4):
        from tests.hosts.fixtures import SshdServer

        self.directory = Path(tempfile.mkdtemp(prefix="bench-fleet-sshd-"))
        self.status = self.directory / "status.json"
        self.status.write_text(status_document())
        self.servers = [SshdServer(self.directory / f"sshd{i}", authorized_keys=[team_key.public_key],
                                   status_path=self.status) for i in range(count)]

    def stop(self):
        for server in self.servers:
            server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def register_sshd_hosts(team, fleet, count):
    from hosts.models import Host

    hosts = [Host(team=team, name=f"sshd-{i:04d}", address="127.0.0.1", port=fleet.servers[i % len(fleet.servers)].port,
                  host_key=fleet.servers[i % len(fleet.servers)].host_key) for i in range(count)]
    Host.objects.bulk_create(hosts, batch_size=500)
    return list(Host.objects.filter(team=team).values_list("pk", flat=True))


def run_sshd(args, fleet=None):
    team, key = bench_team()
    own = fleet is None
    fleet = fleet or SshdFleet(key)
    try:
        ids = register_sshd_hosts(team, fleet, args.hosts)
        print(f"sshd: {len(ids)} hosts over {len(fleet.servers)} OpenSSH servers, status {fleet.status.stat().st_size} "
              f"bytes", flush=True)
        return poll_rounds(ids, args.concurrency, args.rounds, server_pids=[s.process.pid for s in fleet.servers])
    finally:
        if own:
            fleet.stop()


def run_ansible(args):
    team, key = bench_team()
    ansible = ANSIBLE_VENV / "bin" / "ansible"
    if not ansible.exists():
        print(f"installing ansible-core into {ANSIBLE_VENV} (from PyPI)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], check=True)
        subprocess.run([str(ANSIBLE_VENV / "bin" / "pip"), "install", "-q", "ansible-core"], check=True)
    version = subprocess.run([str(ansible), "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    fleet = SshdFleet(key)
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-ansible-"))
    try:
        (work / "id").write_text(key.private_key)
        (work / "id").chmod(0o600)
        (work / "known_hosts").write_text("".join(f"[127.0.0.1]:{s.port} {s.host_key}\n" for s in fleet.servers))
        lines = ["[fleet]"] + [
            f"sshd-{i:04d} ansible_host=127.0.0.1 ansible_port={fleet.servers[i % len(fleet.servers)].port} "
            f"ansible_user=root ansible_control_path={work}/cp-{i:04d}" for i in range(args.hosts)
        ]
        (work / "inventory").write_text("\n".join(lines) + "\n")
        (work / "ansible.cfg").write_text("[defaults]\n")  # nothing from ~/.ansible.cfg or /etc
        env = {
            **os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_PRIVATE_KEY_FILE": str(work / "id"),
            "ANSIBLE_SSH_ARGS": f"-o ControlMaster=no -o UserKnownHostsFile={work / 'known_hosts'} "
                                "-o StrictHostKeyChecking=yes",
            "ANSIBLE_REMOTE_TEMP": str(work / "remote-tmp"), "ANSIBLE_LOCAL_TEMP": str(work / "local-tmp"),
            "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3", "ANSIBLE_CONFIG": str(work / "ansible.cfg"),
            "ANSIBLE_FORKS": "50", "ANSIBLE_NOCOLOR": "1",
        }
        server_cpu = sum(proc_cpu(s.process.pid) for s in fleet.servers)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.monotonic()
        done = subprocess.run([str(ansible), "all", "-i", str(work / "inventory"), "-m", "command",
                               "-a", "bootc status --format=json", "-f", "50", "-o"],
                              env=env, capture_output=True, text=True)
        wall = time.monotonic() - wall
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        ok = sum(1 for line in done.stdout.splitlines() if " | CHANGED | rc=0" in line)
        result = {"tool": version, "hosts": args.hosts, "forks": 50, "wall_s": round(wall, 1),
                  "controller_cpu_s": round(cpu, 1), "cpu_ms_per_host": round(cpu * 1000 / args.hosts, 1),
                  "server_cpu_s": round(sum(proc_cpu(s.process.pid) for s in fleet.servers) - server_cpu, 1),
                  "ok": ok, "failed": args.hosts - ok}
        if ok < args.hosts:
            result["first_errors"] = ([line for line in done.stdout.splitlines() if "CHANGED" not in line][:3]
                                      + done.stderr.splitlines()[-3:])
        print(f"  ansible: {json.dumps(result)}", flush=True)
        return [result]
    finally:
        fleet.stop()
        shutil.rmtree(work, ignore_errors=True)


def run_list(args):
    from django.test import Client
    from django.utils import timezone

    from hosts.models import Host, HostState
    from portal.models import Membership, User

    team, _ = bench_team()
    states = [HostState.UP_TO_DATE, HostState.DRIFT, HostState.UPDATE_STAGED, HostState.UNREACHABLE, HostState.RUNNING]
    stages = list(team.stages.all())
    now = timezone.now()
    Host.objects.bulk_create([
        Host(team=team, name=f"list-{i:05d}", address=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
             stage=stages[i % len(stages)], state=states[i % len(states)], drifting=i % 5 == 1,
             labels=f"rack={i % 40} {'web' if i % 3 else 'db'}", booted_digest="sha256:" + f"{i:064x}",
             booted_version="1.0", status_at=now, host_key="ssh-ed25519 AAAA")
        for i in range(10_000)
    ], batch_size=1000)
    user, _ = User.objects.get_or_create(username="bench-viewer")
    Membership.objects.get_or_create(user=user, team=team, defaults={"role": "viewer"})
    from django.conf import settings
    from django.test.utils import setup_test_environment

    setup_test_environment()  # lets the client see the response's context (for the row counts)
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    client = Client()
    client.force_login(user)
    pages = {"first page": "/hosts/", "page 150": "/hosts/?page=150", "state=drift": "/hosts/?state=drift",
             "stage=prod, label=web, page 20": "/hosts/?stage=prod&label=web&page=20",
             "search 'list-0999'": "/hosts/?q=list-0999", "htmx filter": "/hosts/?state=unreachable"}
    results = []
    for name, url in pages.items():
        client.get(url)  # warm
        timings = []
        for _ in range(5):
            started = time.monotonic()
            response = client.get(url, HTTP_HX_REQUEST="true") if name == "htmx filter" else client.get(url)
            timings.append((time.monotonic() - started) * 1000)
            assert response.status_code == 200
        results.append({"page": name, "median_ms": round(sorted(timings)[2], 1),
                        "rows": response.context["page"].paginator.count})
        print(f"  list: {json.dumps(results[-1])}", flush=True)
    Host.objects.filter(team=team).delete()
    return results


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu": cpu, "kernel": platform.release(), "python": platform.python_version(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "load_average_at_start": Path("/proc/loadavg").read_text().split()[0]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--base-port", type=int, default=24000)
    parser.add_argument("--targets", default="simulator,sshd,list",
                        help="comma-separated: simulator, sshd, ansible, list")
    parser.add_argument("--poll-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    setup_django(migrate=not args.poll_child)
    if args.poll_child:
        return poll_child(args.poll_child, args.concurrency)
    import paramiko

    out = ROOT / "bench" / "fleet" / "results.json"
    report = json.loads(out.read_text()) if out.exists() else {}
    report.update({"machine": machine(), "paramiko": paramiko.__version__})
    print(json.dumps(report["machine"]), flush=True)
    for target in args.targets.split(","):
        runner = {"simulator": run_simulator, "sshd": run_sshd, "ansible": run_ansible, "list": run_list}[target]
        report[target] = runner(args)
        out.write_text(json.dumps(report, indent=2) + "\n")  # after each target, so a later failure keeps it
    print(f"results: {out}")


if __name__ == "__main__":
    main()
