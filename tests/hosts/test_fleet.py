"""`manage.py simulate_fleet` as `make run` starts it (registering its hosts, idempotently), and host work done by a real
Celery worker: a poll task and an action requested through the page."""

import subprocess
import sys
import time

import pytest

from hosts import poller
from hosts.models import ActionKind, Host, HostAction, HostState
from portal.models import AuditEvent, RunStatus
from tests.helpers import ROOT, free_port_range, wait_for
from tests.hosts.fixtures import booted_state
from tests.plugins.processes import subprocess_env

pytestmark = pytest.mark.processes


class FleetCommand:
    def __init__(self, redis_url, tmp_path, *args):
        self.log_path = tmp_path / f"fleet-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "simulate_fleet", *args], cwd=ROOT, env=subprocess_env(redis_url),
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def output(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text):
        def seen():
            if self.process.poll() is not None:
                raise AssertionError(f"simulate_fleet exited: {self.output()}")
            return text in self.output()

        wait_for(seen, timeout=60, what=f"{text!r} from simulate_fleet")

    def stop(self):
        self.process.terminate()
        self.process.wait(15)
        self.log.close()


@pytest.mark.slow
def test_simulate_fleet_registers_its_hosts_once_and_they_answer(redis_server, tmp_path, transactional_db, personas,
                                                                 settings):
    settings.HOSTS_CONNECT_TIMEOUT = settings.HOSTS_HANDSHAKE_TIMEOUT = 3.0
    base_port = free_port_range(5)
    args = ["--hosts", "5", "--register", "--team", personas.team.slug, "--base-port", str(base_port),
            "--state-dir", str(tmp_path / "state"), "--no-seed"]
    first = FleetCommand(redis_server.url, tmp_path, *args)
    try:
        first.wait_for("registered 5 new host(s)")
        hosts = {h.name: h for h in Host.objects.filter(team=personas.team)}
        assert sorted(hosts) == ["api-01", "cache-01", "db-01", "edge-01", "web-01"]
        assert all(h.trusted and h.address == "127.0.0.1" for h in hosts.values())
        assert hosts["web-01"].stage.name == "prod" and hosts["edge-01"].stage.name == "dev"
        assert poller.poll_hosts([h.pk for h in hosts.values()]) == {"ok": 0, "changed": 5, "failed": 0}
        states = dict(Host.objects.values_list("name", "staged_version"))
        assert states["api-01"] == "1.1" and states["edge-01"] == "1.2" and states["web-01"] == ""
        keys = dict(Host.objects.values_list("name", "host_key"))
    finally:
        first.stop()
    again = FleetCommand(redis_server.url, tmp_path, *args)
    try:
        again.wait_for("registered 0 new host(s)")
        assert dict(Host.objects.values_list("name", "host_key")) == keys  # same keys from the state dir
        assert AuditEvent.objects.filter(action="hosts.create").count() == 5
        assert poller.poll_hosts(list(Host.objects.values_list("pk", flat=True)))["failed"] == 0
    finally:
        again.stop()


@pytest.mark.slow
def test_a_worker_polls_and_runs_an_action_requested_on_the_page(start_worker, fleet, personas, client_for):
    fleet.add("web-01", booted_state("127.0.0.1:1/platform/web-os:prod"))
    host = fleet.start()["web-01"]
    from hosts.tasks import poll_hosts_task

    start_worker(queues="hosts", concurrency=1)  # one task at a time: the poll, then the action
    poll_hosts_task.delay([host.pk])
    wait_for(lambda: Host.objects.get(pk=host.pk).status_at is not None, timeout=30, what="the worker's poll")
    assert Host.objects.get(pk=host.pk).state == HostState.RUNNING

    response = client_for(personas.operator).post(f"/hosts/{host.pk}/actions/{ActionKind.UPGRADE_CHECK}/")
    assert response.status_code == 302
    action = HostAction.objects.get(host=host)

    def finished():
        action.run.refresh_from_db()
        return action.run.is_finished

    wait_for(finished, timeout=30, what="the action's run to end")
    # The simulated registry at 127.0.0.1:1 does not exist: bootc's error becomes the run's reason, the host is free.
    assert action.run.status == RunStatus.FAILED and "error:" in action.run.exit_reason
    assert action.run.log_lines >= 2
    assert not HostAction.objects.get(pk=action.pk).active
