"""The rollout tests' steps (tests/hosts/test_rollouts.py, test_rollout_switch.py): a fleet on the stage prod booting 1.0
with 1.1 waiting, the stage's rollout policy, starting a rollout, its rows by host name, and the commands a simulated
host was sent."""

from builds.releases.models import Stage
from hosts import drift, poller
from hosts.rollouts import services
from hosts.rollouts.models import RolloutHost
from tests.hosts.fixtures import booted_state


def make_fleet(fleet, demo_images, names, *, prepare=None):
    """Hosts of the stage prod booting 1.0 and tracking its tag, which holds 1.1; polled once, prod's digests known."""
    digests, base = demo_images
    for name in names:
        make = booted_state(f"{base}:prod", digests["1.0"]["amd64"], "1.0")

        def state(s, make=make, name=name):
            make(s)
            if prepare:
                prepare(name, s)
        fleet.add(name, state)
    stage = Stage.objects.get(team=fleet.team, name="prod")
    hosts = fleet.start(stage=stage)
    poller.poll_hosts([h.pk for h in hosts.values()])
    drift.reference_digests_set(reference=f"{base}:prod", digests=digests["1.1"])
    return hosts


def set_policy(stage, user, windows=(), **fields):
    return services.policy_save(stage=stage, user=user, fields=fields, windows=list(windows))


def start(stage, demo_images, user):
    digests, base = demo_images
    return services.rollout_start(stage=stage, reference=f"{base}:prod", digest=digests["1.1"]["amd64"], user=user)


def rows_by_name(rollout):
    return {row.host.name: row for row in RolloutHost.objects.filter(rollout=rollout).select_related("host")}


def commands_with(fleet, name, flag):
    return [line for line in fleet.sim(name).commands if flag in line]
