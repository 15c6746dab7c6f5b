"""The rollout benchmark: one rollout of a new digest to N simulated hosts over real SSH, with the engine of
`hosts.rollouts` in this process; reports wall time, the portal's CPU per host, and where every host ended.

The hosts (one asyncssh event loop in a thread of this process, as the tests run them) track the `prod` tag of a tiny
multi-arch image in a real docker-registry on loopback; prod moves from 1.0 to 1.1 and the rollout takes 1.1 to the
hosts: a canary of 5 %, then batches of 10 %, no soak, `--download-only` then `--from-downloaded --apply`, each reboot
`--reboot-seconds` long. "Portal CPU" is this process's CPU less the simulator thread's (thread CPU clocks).

    bench/rollouts/run --hosts 200          (about a minute here)
    bench/rollouts/run --hosts 200 --fail-canary 5    5 % of the canary fails greenboot: the rollout halts after it
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_bench_rollouts")


def setup_django():
    import psycopg

    os.environ["DATABASE_URL"] = DATABASE_URL
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("PORTAL_VAR_DIR", str(Path(tempfile.gettempdir()) / "portal-bench-rollouts-var"))
    name = DATABASE_URL.rsplit("/", 1)[1]
    with psycopg.connect(DATABASE_URL.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')  # a fresh fleet each run
        admin.execute(f'CREATE DATABASE "{name}"')
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    import logging

    logging.getLogger("asyncssh").setLevel(logging.WARNING)


def thread_cpu(thread_name_prefix):
    """CPU seconds of this process's threads whose name starts with the prefix (Linux /proc)."""
    total = 0.0
    names = {t.native_id: t.name for t in threading.enumerate()}
    for task in Path("/proc/self/task").iterdir():
        if names.get(int(task.name), "").startswith(thread_name_prefix):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--reboot-seconds", type=float, default=1.0)
    parser.add_argument("--fail-canary", type=float, default=0.0, help="percent of the canary that fails greenboot")
    args = parser.parse_args()
    setup_django()

    from django.conf import settings

    from builds.releases.models import Stage
    from hosts import drift, poller, services, simregistry
    from hosts.rollouts import engine
    from hosts.rollouts import services as rollouts
    from hosts.rollouts.models import RolloutHost
    from hosts.simulator import Fleet
    from portal import sshpool
    from portal.models import Membership, Team, User
    from tests.builds.fixtures import Registry
    from tests.hosts.fixtures import booted_state

    settings.ROLLOUTS_TICK_SECONDS = 0.25
    settings.HOSTS_REBOOT_POLL_SECONDS = 0.5
    settings.HOSTS_SSH_RECONNECT_BASE_SECONDS = 0.2
    registry = Registry(tempfile.mkdtemp(prefix="portal-bench-registry-"))
    repository = "platform/web-os"
    digests = {v: simregistry.push_demo_image(registry.address, repository, version=v, tags=t)
               for v, t in (("1.0", []), ("1.1", ["prod"]))}
    base = f"{registry.address}/{repository}"

    team = Team.objects.create(name="Bench", slug="bench")
    admin = User.objects.create_user("bench-admin", password="x")  # noqa: S106 - a throwaway bench user
    Membership.objects.create(team=team, user=admin, role="admin")
    stage = Stage.objects.create(team=team, name="prod", position=2)
    key = services.team_key_ensure(team=team)
    fleet = Fleet(authorized_keys=[key.public_key], reboot_seconds=args.reboot_seconds)
    names = [f"web-{i:04d}" for i in range(args.hosts)]
    for name in names:
        fleet.load_or_create(name, make_state=booted_state(f"{base}:prod", digests["1.0"]["amd64"], "1.0"))
    fleet.start_in_thread()
    hosts = [services.host_create(team=team, name=sim.name, address="127.0.0.1", port=sim.port, actor=None,
                                  stage=stage, tracked_image=sim.state.spec_image, host_key=sim.public_host_key(),
                                  poll_now=False) for sim in fleet.hosts.values()]
    poller.poll_hosts([h.pk for h in hosts])
    drift.reference_digests_set(reference=f"{base}:prod", digests=digests["1.1"])
    rollouts.policy_save(stage=stage, user=admin, windows=[], fields={
        "canary_percent": 5, "batch_percent": 10, "max_failed_percent": 0 if args.fail_canary else 5})
    canary = sorted(names)[:max(1, round(args.hosts * 5 / 100))]
    for name in canary[:round(len(canary) * args.fail_canary / 100)]:
        fleet.set_fault(name, "fail_health_check", True)

    rollouts._enqueue = lambda rollout: None  # no broker here: this process runs the engine itself, below
    rollout = rollouts.rollout_start(stage=stage, reference=f"{base}:prod", digest=digests["1.1"]["amd64"],
                                     user=admin)
    started, cpu_before = time.monotonic(), time.process_time()
    sim_before = thread_cpu("fleet-simulator")
    engine.rollout_execute(rollout.pk)
    wall = time.monotonic() - started
    sim_cpu = thread_cpu("fleet-simulator") - sim_before
    portal_cpu = time.process_time() - cpu_before - sim_cpu
    rollout.refresh_from_db()
    rows = list(RolloutHost.objects.filter(rollout=rollout))
    steps = {}
    for row in rows:
        steps[row.step] = steps.get(row.step, 0) + 1
    downtimes = sorted(row.downtime_seconds for row in rows if row.downtime_seconds is not None)
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": f"{platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}", "hosts": args.hosts,
        "reboot_seconds": args.reboot_seconds, "batches": rollout.batches, "status": rollout.status,
        "note": rollout.status_note, "steps": steps, "wall_seconds": round(wall, 1),
        "portal_cpu_seconds": round(portal_cpu, 1), "portal_cpu_ms_per_host": round(portal_cpu * 1000 / args.hosts),
        "simulator_cpu_seconds": round(sim_cpu, 1),
        "median_downtime_seconds": downtimes[len(downtimes) // 2] if downtimes else None,
    }
    print(json.dumps(result, indent=2))
    out = Path(__file__).with_name("results.json")
    previous = json.loads(out.read_text()) if out.exists() else []
    out.write_text(json.dumps([*previous, result], indent=2) + "\n")
    sshpool.reset_shared()
    fleet.stop_thread()
    registry.stop()


if __name__ == "__main__":
    main()
