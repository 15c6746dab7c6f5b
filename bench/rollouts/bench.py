"""The rollout benchmark: one rollout of a new digest to N simulated hosts over real SSH, with the engine of
`hosts.rollouts` in this process; reports wall time, the portal's CPU per host, and where every host ended.

The hosts (one asyncssh event loop in a thread of this process, as the tests run them) track the `prod` tag of a tiny
multi-arch image in a real docker-registry on loopback; prod moves from 1.0 to 1.1 and the rollout takes 1.1 to the
hosts: a canary of 5 %, then batches of 10 %, no soak, `--download-only` then `--from-downloaded --apply`, each reboot
`--reboot-seconds` long. "Portal CPU" is this process's CPU less the simulator thread's (thread CPU clocks).

    bench/rollouts/run --hosts 200          (about a minute here)
    bench/rollouts/run --hosts 200 --fail-canary 5    5 % of the canary fails greenboot: the rollout halts after it
    bench/rollouts/run --hosts 200 --ansible          the reference: the same rollout as an Ansible rolling playbook

The reference is what a user would write instead (ansible-core from PyPI in a throwaway venv under /tmp, as
bench/fleet installs it): `serial` with the same canary and batch sizes, `max_fail_percentage` with the same
threshold, `bootc upgrade --quiet --apply` on each host (the `raw` module: the simulated hosts run bootc, not Python),
`wait_for` the host's SSH port from the controller while it reboots, then `bootc status` and an assert that it boots the
target digest (a host greenboot rolled back fails the assert). Against the same simulated hosts, with strict host
keys and ansible's default SSH connection sharing; its CPU is ansible-playbook's and its ssh clients' (RUSAGE_CHILDREN).
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
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_bench_rollouts")
ANSIBLE_VENV = Path(os.environ.get("BENCH_ANSIBLE_VENV", Path(tempfile.gettempdir()) / "portal-bench-ansible"))


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
    parser.add_argument("--ansible", action="store_true", help="run the Ansible rolling playbook instead of the portal")
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

    if args.ansible:
        result = run_ansible(args, fleet=fleet, key=key, canary=len(canary), target=digests["1.1"]["amd64"])
        finish(result, fleet, registry)
        return

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
    sshpool.reset_shared()
    finish(result, fleet, registry)


def finish(result, fleet, registry):
    print(json.dumps(result, indent=2))
    out = Path(__file__).with_name("results.json")
    previous = json.loads(out.read_text()) if out.exists() else []
    out.write_text(json.dumps([*previous, result], indent=2) + "\n")
    fleet.stop_thread()
    registry.stop()


PLAYBOOK = """\
- name: Roll out the new digest to the fleet, canary first
  hosts: fleet
  gather_facts: false
  serial: [{canary}, "10%"]
  max_fail_percentage: {max_fail}
  tasks:
    - name: Stage the update and reboot into it
      ansible.builtin.raw: bootc upgrade --quiet --apply
    - name: Wait for the host to come back (its SSH port, from the controller)
      ansible.builtin.wait_for:
        host: "{{{{ hostvars[inventory_hostname].ansible_host }}}}"
        port: "{{{{ hostvars[inventory_hostname].ansible_port }}}}"
        delay: {delay}
        timeout: 300
      delegate_to: localhost
    - name: Read what it booted
      ansible.builtin.raw: bootc status --format=json --format-version=1
      register: status
      changed_when: false
    - name: It boots the target (greenboot may have rolled it back)
      ansible.builtin.assert:
        that: (status.stdout | from_json).status.booted.image.imageDigest == "{target}"
"""


def ansible_ensure():
    playbook = ANSIBLE_VENV / "bin" / "ansible-playbook"
    if not playbook.exists():
        print(f"installing ansible-core into {ANSIBLE_VENV} (from PyPI)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], check=True)
        subprocess.run([str(ANSIBLE_VENV / "bin" / "pip"), "install", "-q", "ansible-core"], check=True)
    return playbook


def run_ansible(args, *, fleet, key, canary, target):
    """The reference: the same rollout as an Ansible rolling playbook against the same simulated hosts."""
    playbook = ansible_ensure()
    version = subprocess.run([str(ANSIBLE_VENV / "bin" / "ansible"), "--version"], capture_output=True,
                             text=True).stdout.splitlines()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-rollouts-ansible-"))
    try:
        (work / "id").write_text(key.private_key)
        (work / "id").chmod(0o600)
        sims = sorted(fleet.hosts.values(), key=lambda sim: sim.name)
        (work / "known_hosts").write_text("".join(f"[127.0.0.1]:{sim.port} {sim.public_host_key()}\n"
                                                  for sim in sims))
        (work / "inventory").write_text("[fleet]\n" + "".join(
            f"{sim.name} ansible_host=127.0.0.1 ansible_port={sim.port} ansible_user=root\n" for sim in sims))
        (work / "rollout.yml").write_text(PLAYBOOK.format(
            canary=canary, max_fail=0 if args.fail_canary else 5, delay=max(1, round(args.reboot_seconds)),
            target=target))
        (work / "ansible.cfg").write_text("[defaults]\n")  # nothing from ~/.ansible.cfg or /etc
        env = {
            **os.environ, "ANSIBLE_CONFIG": str(work / "ansible.cfg"), "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_PRIVATE_KEY_FILE": str(work / "id"), "ANSIBLE_FORKS": "50", "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_SSH_ARGS": f"-C -o ControlMaster=auto -o ControlPersist=60s "
                                f"-o UserKnownHostsFile={work / 'known_hosts'} -o StrictHostKeyChecking=yes",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"), "ANSIBLE_LOCAL_TEMP": str(work / "local-tmp"),
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable, "ANSIBLE_RETRY_FILES_ENABLED": "False",
        }
        failing = sum(1 for sim in sims if sim.faults.get("fail_health_check"))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        sim_before = thread_cpu("fleet-simulator")
        started = time.monotonic()
        done = subprocess.run([str(playbook), "-i", str(work / "inventory"), str(work / "rollout.yml")], env=env,
                              capture_output=True, text=True)
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        (Path(tempfile.gettempdir()) / "bench-rollouts-ansible.log").write_text(done.stdout + done.stderr)
        recap = [line for line in done.stdout.splitlines() if " : ok=" in line]
        failed = sum(1 for line in recap if "failed=0" not in line or "unreachable=0" not in line)
        booted = {sim.name: sim.state.booted.digest for sim in sims}
        return {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": f"{platform.machine()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}", "tool": version, "hosts": args.hosts,
            "reboot_seconds": args.reboot_seconds, "failing_canary_hosts": failing,
            "exit_status": done.returncode, "wall_seconds": round(wall, 1),
            "controller_cpu_seconds": round(cpu, 1), "controller_cpu_ms_per_host": round(cpu * 1000 / args.hosts),
            "simulator_cpu_seconds": round(thread_cpu("fleet-simulator") - sim_before, 1),
            "hosts_in_recap": len(recap), "hosts_failed": failed,
            "hosts_on_target": sum(1 for digest in booted.values() if digest == target),
            "note": (done.stdout.strip().splitlines() or [""])[-1][:200] if done.returncode else "",
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
