"""Fleet at scale, over SSH: 10,000 simulated hosts polled over kept-open connections, side by side with the
fresh-connection poller on the same 10,000 and on 1,000 of them.

The hosts: `manage.py simulate_fleet` in several processes (`--processes`, 2,500 hosts each by default: each host is a
listening socket and a connection, and a process may hold 20,000 files here), each host its own loopback port and host
key. Their rows are bulk-inserted into PostgreSQL with the keys confirmed.

Each mode polls in a child process, as the hosts worker would (`hosts.poller.poll_hosts` over every host id, the same
code beat's tasks run): `keep-open` runs `--rounds` rounds in one process, so round 1 connects and logs in to every
host and the later rounds are the steady state; `fresh` runs each round in a new process with
`HOSTS_SSH_KEEP_OPEN=false` (a thread pool of 64, a fresh connection per host). Reported per round: wall time, the
poller process's CPU (per host), its peak RSS, the simulators' CPU, and hosts lost (neither read nor failed).

    bench/fleet/scale.py                       keep-open 10,000; fresh 10,000; fresh 1,000 (about 10 minutes)
    bench/fleet/scale.py --hosts 2000 --modes keep-open
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_bench_fleet_scale")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 - bench/fleet/bench.py, the 1,000-host benchmark's helpers


def start_simulators(args, public_key, directory):
    per = -(-args.hosts // args.processes)
    processes, manifests = [], []
    for number in range(args.processes):
        first, count = number * per, min(per, args.hosts - number * per)
        if count <= 0:
            break
        manifest = directory / f"manifest-{number}.jsonl"
        log = open(directory / f"sim-{number}.log", "wb")  # noqa: SIM115 - the process keeps it
        processes.append(subprocess.Popen(
            [sys.executable, "manage.py", "simulate_fleet", "--hosts", str(count), "--first", str(first),
             "--base-port", str(args.base_port), "--state-dir", "none", "--no-seed", "--authorized-key", public_key,
             "--manifest", str(manifest)],
            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True))
        manifests.append(manifest)
    deadline = time.monotonic() + 600
    while not all(m.exists() for m in manifests):
        if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
            raise SystemExit("a simulator did not start: " + " ".join(
                (directory / f"sim-{i}.log").read_text()[-2000:] for i in range(len(processes))))
        time.sleep(1)
    hosts = [json.loads(line) for m in manifests for line in m.read_text().splitlines() if line]
    return processes, hosts


def register(team, hosts):
    from hosts.models import Host

    Host.objects.bulk_create([
        Host(team=team, name=h["name"], address="127.0.0.1", port=h["port"], host_key=h["host_key"],
             labels=f"simulated {h['architecture']}") for h in hosts], batch_size=1000)
    return list(Host.objects.filter(team=team).order_by("pk").values_list("pk", flat=True))


def poll_child(ids_file, rounds):
    """The measured process: `rounds` polls of every host, one after the other, in this one process."""
    from django.db import connection

    from hosts import connect, poller
    from hosts.models import Host
    from portal import sshpool

    host_ids = json.loads(Path(ids_file).read_text())
    Host.objects.filter(pk__in=host_ids[:1]).exists()
    baseline = bench.rss_mb()
    for number in range(1, rounds + 1):
        Host.objects.filter(pk__in=host_ids).update(next_poll_at=None)
        threads = thread_cpu()
        cpu, wall = time.process_time(), time.monotonic()
        if os.environ.get("BENCH_PROFILE") and number == rounds:
            import cProfile
            import pstats

            profile = cProfile.Profile(time.thread_time)
            pool = sshpool.shared()
            pool.loop.call_soon_threadsafe(profile.enable)  # the pool's loop thread: where the SSH work happens
            counts = poller.poll_hosts(host_ids)
            pool.loop.call_soon_threadsafe(profile.disable)
            time.sleep(0.2)
            pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(30)
        else:
            counts = poller.poll_hosts(host_ids)
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
        threads = {name: round(value - threads.get(name, 0), 2) for name, value in thread_cpu().items()}
        stats = sshpool.shared().stats() if connect.keep_open() else {}
        print(json.dumps({
            "round": number, "hosts": len(host_ids), "wall_s": round(wall, 2), "portal_cpu_s": round(cpu, 2),
            "cpu_ms_per_host": round(cpu * 1000 / len(host_ids), 3), "baseline_rss_mb": round(baseline, 1),
            "rss_mb": round(bench.rss_mb(), 1), "peak_rss_mb": round(bench.peak_mb(), 1), "counts": counts,
            "lost": len(host_ids) - counts["ok"] - counts["changed"] - counts["failed"],
            "open_connections": stats.get("open"), "logins": stats.get("connects"), "cpu_s_by_thread": threads,
        }), flush=True)
        connection.close()


def thread_cpu():
    """{thread name: CPU seconds} of this process's threads (the poller's own thread, the SSH pool's loop, ...)."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            name = names.get(int(task.name), "other")
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def measure(mode, ids, rounds, simulators, label):
    ids_file = Path(tempfile.mkstemp(prefix="bench-scale-ids-")[1])
    ids_file.write_text(json.dumps(ids))
    env = {**os.environ, "HOSTS_SSH_KEEP_OPEN": "true" if mode == "keep-open" else "false",
           "HOSTS_POLL_CONCURRENCY": "64"}
    results = []
    try:
        processes = 1 if mode == "keep-open" else rounds
        for _ in range(processes):
            before = sum(bench.proc_cpu(p.pid) for p in simulators)
            load = Path("/proc/loadavg").read_text().split()[0]
            child = subprocess.Popen([sys.executable, __file__, "--poll-child", str(ids_file), "--rounds",
                                      str(rounds if mode == "keep-open" else 1)], stdout=subprocess.PIPE, text=True,
                                     env=env)
            for line in child.stdout:
                if line.startswith("{"):
                    result = json.loads(line)
                    result.update({"mode": mode, "label": label, "load_average": load,
                                   "simulators_cpu_s": round(sum(bench.proc_cpu(p.pid) for p in simulators) - before,
                                                             2)})
                    if mode != "keep-open":
                        result["round"] = len(results) + 1
                    before = sum(bench.proc_cpu(p.pid) for p in simulators)
                    load = Path("/proc/loadavg").read_text().split()[0]
                    results.append(result)
                    print(f"  {label} {json.dumps(result)}", flush=True)
            if child.wait() != 0:
                raise SystemExit(f"the poll child failed ({mode})")
    finally:
        ids_file.unlink(missing_ok=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    # Below the kernel's ephemeral range (32768-60999 here): a simulated host's port there can be taken by any outgoing
    # connection at the moment it binds.
    parser.add_argument("--base-port", type=int, default=12000)
    parser.add_argument("--modes", default="keep-open,fresh,fresh-1000")
    parser.add_argument("--poll-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    bench.DATABASE_URL = os.environ["BENCH_DATABASE_URL"]
    bench.setup_django(migrate=not args.poll_child)
    if args.poll_child:
        return poll_child(args.poll_child, args.rounds)
    out = ROOT / "bench" / "fleet" / "scale-results.json"
    report = {"machine": bench.machine(), "runs": []}
    print(json.dumps(report["machine"]), flush=True)
    team, key = bench.bench_team()
    directory = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    simulators, hosts = start_simulators(args, key.public_key, directory)
    try:
        ids = register(team, hosts)
        print(f"{len(ids)} hosts in {len(simulators)} simulator processes", flush=True)
        for mode in args.modes.split(","):
            if mode == "keep-open":
                report["runs"] += measure("keep-open", ids, args.rounds, simulators, f"keep-open {len(ids)}")
            elif mode == "fresh":
                report["runs"] += measure("fresh", ids, 2, simulators, f"fresh {len(ids)}")
            elif mode == "fresh-1000":
                report["runs"] += measure("fresh", ids[:1000], 2, simulators, "fresh 1000")
            out.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        for process in simulators:
            process.terminate()
        for process in simulators:
            process.wait(60)
    report["machine"]["load_average_at_end"] = Path("/proc/loadavg").read_text().split()[0]
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
