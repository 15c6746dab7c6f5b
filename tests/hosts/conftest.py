"""The hosts tests' fixtures: short SSH deadlines, the team's key, the simulated fleet, demo images in the test
registry, a host waiting for an update (prod_host), and the rollout tests' stage prod and quick engine settings. What
they are made of (FleetForTests, booted_state, SshdServer) is in tests/hosts/fixtures.py."""

import pytest

from builds.releases.models import Stage
from hosts import drift, poller, services, simregistry
from hosts.models import HostState
from tests.hosts.fixtures import REPOSITORY, FleetForTests, booted_state
from tests.hosts.pages import make_host


@pytest.fixture
def host_settings(settings):
    """Short deadlines and pauses, so faults cost the suite little time."""
    settings.HOSTS_CONNECT_TIMEOUT = 2.0
    settings.HOSTS_HANDSHAKE_TIMEOUT = 2.0
    settings.HOSTS_AUTH_TIMEOUT = 2.0
    settings.HOSTS_COMMAND_TIMEOUT = 5.0
    settings.HOSTS_REBOOT_POLL_SECONDS = 0.1
    settings.HOSTS_REBOOT_WAIT_SECONDS = 20
    settings.HOSTS_POLL_CONCURRENCY = 16
    settings.HOSTS_SSH_RECONNECT_BASE_SECONDS = 0.1
    return settings


@pytest.fixture
def team_key(personas):
    return services.team_key_ensure(team=personas.team)


@pytest.fixture
def fleet(personas, team_key, host_settings):
    """fleet.add(name, make_state) ...; fleet.start() -> {name: Host}. Stopped after the test."""
    made = FleetForTests(personas.team, team_key)
    yield made
    made.stop()


@pytest.fixture
def demo_images(oci_registry):
    """Versions 1.0, 1.1 and 1.2 of a tiny multi-arch bootc image in the test registry; prod holds 1.1, dev 1.2.
    Returns {version: {arch: digest, "": index digest}} and the reference base."""
    digests = {}
    for version, tags in (("1.0", []), ("1.1", ["prod"]), ("1.2", ["dev"])):
        digests[version] = simregistry.push_demo_image(oci_registry.address, REPOSITORY, version=version, tags=tags)
    return digests, f"{oci_registry.address}/{REPOSITORY}"


@pytest.fixture
def prod_host(fleet, demo_images):
    """A host tracking prod (which holds 1.1), booting 1.0: an update is waiting in the registry."""
    digests, base = demo_images
    fleet.add("web-01", booted_state(f"{base}:prod", digests["1.0"]["amd64"], "1.0"))
    host = fleet.start()["web-01"]
    poller.poll_hosts([host.pk])
    drift.reference_digests_set(reference=f"{base}:prod", digests=digests["1.1"])
    host.refresh_from_db()
    assert host.state == HostState.DRIFT
    return host


@pytest.fixture
def host(personas):
    """A team's host in prod as a poll would leave it (tests/hosts/pages.py), its team's key made; no SSH."""
    services.team_key_ensure(team=personas.team)
    return make_host(personas.team, "web-01", labels="eu web", stage=personas.team.stages.get(name="prod"))


@pytest.fixture
def rollout_settings(host_settings):
    host_settings.ROLLOUTS_TICK_SECONDS = 0.05
    host_settings.ROLLOUTS_REBOOT_WAIT_SECONDS = 4
    # The engine runs in the test's thread here and waits in it; parking (no worker held while a rollout waits) is
    # tested in test_rollouts.py TestWaitingHoldsNoWorker and, through a real worker, in test_rollouts_worker.py.
    host_settings.ROLLOUTS_PARK_AFTER_SECONDS = 10 ** 9
    return host_settings


@pytest.fixture
def prod(personas):
    """The team's stage prod (its hosts are the rollout tests' fleet)."""
    stage, _ = Stage.objects.get_or_create(team=personas.team, name="prod", defaults={"position": 2})
    return stage
