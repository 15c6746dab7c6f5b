"""Rollouts through Celery, as `make run` and production run them: `rollout_start` enqueues the task after commit, a
real worker (on the suite's Redis) runs the engine over real SSH to the simulated fleet, and a rollout that can only
wait parks its run and frees the worker: a countdown task takes it up when its soak time ends, and a control (abort)
wakes it at once."""

import os
from datetime import UTC, datetime, timedelta

import pytest

from builds.releases.models import Stage
from hosts import drift, poller
from hosts.models import Host
from hosts.rollouts import services
from hosts.rollouts.models import Rollout, RolloutHost, RolloutStatus, Step
from hosts.tasks import poll_hosts_task
from portal.models import Run, RunStatus
from tests.helpers import wait_for
from tests.hosts.fixtures import booted_state
from tests.plugins.processes import end_workers, launch_worker

pytestmark = [pytest.mark.processes, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# A wait longer than a second parks the run: the soak below (5 s, once for the canary, once for batch 1) parks it for
# some 4 s, time enough for the poll task of one host to run on the freed worker, and waited for twice.
WORKER_ENV = {"ROLLOUTS_TICK_SECONDS": "0.1", "ROLLOUTS_PARK_AFTER_SECONDS": "1", "ROLLOUTS_REBOOT_WAIT_SECONDS": "20",
              "HOSTS_CONNECT_TIMEOUT": "3", "HOSTS_HANDSHAKE_TIMEOUT": "3", "HOSTS_SSH_RECONNECT_BASE_SECONDS": "0.1"}


@pytest.fixture(scope="module")
def hosts_worker(django_db_setup, redis_server, oci_registry, tmp_path_factory):
    """One worker process on the hosts queue, so one task at a time, for the module's tests (starting one costs some
    3 s of CPU): what a test leaves it is nothing the next can see, each test's rows being new ones. It writes no audit
    checkpoint (beat's task does), but is handed a file of the module's own for them, never the default's."""
    directory = tmp_path_factory.mktemp("hosts-worker")
    worker = launch_worker(redis_server.url, directory, f"hosts-worker-{os.getpid()}", queues="hosts", concurrency=1,
                           AUDIT_CHECKPOINT_PATH=str(directory / "audit-checkpoints.jsonl"), **WORKER_ENV)
    yield worker
    end_workers([worker])


@pytest.fixture
def prod(personas):
    stage, _ = Stage.objects.get_or_create(team=personas.team, name="prod", defaults={"position": 2})
    return stage


@pytest.fixture
def hosts(fleet, demo_images, prod):
    """Three hosts of prod booting 1.0 and tracking its tag, which holds 1.1; polled once, prod's digests known."""
    digests, base = demo_images
    for name in ("web-01", "web-02", "web-03"):
        fleet.add(name, booted_state(f"{base}:prod", digests["1.0"]["amd64"], "1.0"))
    started = fleet.start(stage=prod)
    poller.poll_hosts([h.pk for h in started.values()])
    drift.reference_digests_set(reference=f"{base}:prod", digests=digests["1.1"])
    return started


def start(prod, demo_images, user):
    digests, base = demo_images
    return services.rollout_start(stage=prod, reference=f"{base}:prod", digest=digests["1.1"]["amd64"], user=user)


def run_of(rollout):
    return Run.objects.get(pk=Rollout.objects.get(pk=rollout.pk).run_id)


def log_of(run):
    return "\n".join(chunk.text for chunk in run.chunks.all())


def test_a_worker_runs_the_rollout_and_is_free_while_it_soaks(hosts_worker, fleet, hosts, demo_images, prod,
                                                              personas):
    services.policy_save(stage=prod, user=personas.admin, windows=[],
                         fields={"canary_count": 1, "soak_seconds": 5, "max_failed_percent": 0})

    rollout = start(prod, demo_images, personas.operator)

    wait_for(lambda: run_of(rollout).is_parked, timeout=60, what="the rollout to park while the canary soaks")
    run = run_of(rollout)
    assert run.worker == "" and run.phase.startswith("waiting for the soak time to end (")
    assert RolloutHost.objects.get(rollout=rollout, batch=0).step == Step.SOAKING
    # The only worker is free: a poll task runs while the rollout waits.
    other = hosts["web-03"]
    polled_before = Host.objects.get(pk=other.pk).status_at
    poll_hosts_task.delay([other.pk])
    wait_for(lambda: Host.objects.get(pk=other.pk).status_at != polled_before, timeout=30,
             what="the poll task, run by the worker while the rollout is parked")
    assert run_of(rollout).is_parked

    # The countdown task takes the rollout up when the soak time ends, batch after batch, to the end.
    wait_for(lambda: run_of(rollout).is_finished, timeout=120, what="the rollout to end")
    rollout.refresh_from_db()
    run = run_of(rollout)
    assert (rollout.status, run.status) == (RolloutStatus.COMPLETED, RunStatus.SUCCEEDED), run.exit_reason
    assert run.exit_reason == "Completed: 3/3 hosts updated."
    assert log_of(run).count("the run is parked, no worker is held") >= 2  # the canary's soak, then batch 1's
    digests, _ = demo_images
    assert {Host.objects.get(pk=h.pk).booted_digest for h in hosts.values()} == {digests["1.1"]["amd64"]}


def test_an_abort_wakes_a_rollout_parked_until_its_window(hosts_worker, fleet, hosts, demo_images, prod, personas):
    # A one-hour window half a day away: the hosts download now, and the rollout parks until the window.
    opens = datetime.now(UTC) + timedelta(hours=12)
    services.policy_save(stage=prod, user=personas.admin, fields={"max_failed_percent": 0}, windows=[
        {"weekdays": [opens.weekday()], "starts": f"{opens:%H}:00", "ends": f"{(opens + timedelta(hours=1)):%H}:00"}])
    rollout = start(prod, demo_images, personas.operator)
    wait_for(lambda: run_of(rollout).is_parked, timeout=60, what="the rollout to park until its window")
    assert {row.step for row in RolloutHost.objects.filter(rollout=rollout)} == {Step.STAGED}

    services.rollout_abort(rollout=rollout, user=personas.operator)

    wait_for(lambda: run_of(rollout).is_finished, timeout=60, what="the abort to be carried out")
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.ABORTED
    assert run_of(rollout).status == RunStatus.CANCELLED
    assert {row.step for row in RolloutHost.objects.filter(rollout=rollout)} == {Step.SKIPPED}
    assert not any(line for name in ("web-01", "web-02", "web-03")
                   for line in fleet.sim(name).commands if "--apply" in line)
