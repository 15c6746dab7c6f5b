"""The machine endpoints' server (`python -m portal.machine_server`: uvicorn serving the agents' endpoints, where the
proxy routes /agent/v1/): a real process on loopback, the test database and the suite's Redis, taking agents' requests
over new connections as curl sends them. It answers them as the web processes do, with the same front and the same
refusals, and answers nothing else."""

import http.client
import json
import signal
import sys

import pytest
from asgiref.sync import async_to_sync

from hosts.models import Host, HostSnapshot, HostState
from hosts.services import host_delete
from tests.helpers import free_port, wait_for
from tests.hosts.reportin_fixtures import make_token, status_json
from tests.plugins.processes import PortalProcess, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def server(redis_server, tmp_path_factory, django_db_setup, django_db_blocker):
    """One server for the module's tests (it keeps nothing of a test's hosts but their credentials' hashes, which the
    next test's hosts do not share), on the test database."""
    port = free_port()
    args = [sys.executable, "-m", "portal.machine_server", "--host", "127.0.0.1", "--port", str(port)]
    with django_db_blocker.unblock():
        env = subprocess_env(redis_server.url)
    process = PortalProcess("agents", args, env, tmp_path_factory.mktemp("agents-server"))
    process.port = port
    try:
        wait_for(lambda: _answers(port) or process.process.poll() is not None, timeout=120,
                 what="the agents' server to listen")
        assert process.process.poll() is None, process.output()[-3000:]
    except AssertionError:
        process.stop(signal.SIGKILL)
        raise
    yield process
    process.stop(signal.SIGKILL)


def _answers(port):
    try:
        return request(port, "GET", "/health/live")[0] == 200
    except OSError:
        return False


def request(port, method, path, body=b"", credential=None):
    """One request on a new connection, as an agent's curl sends it; returns (status, headers, JSON or text)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json", "Connection": "close"}
    if credential:
        headers["Authorization"] = f"Bearer {credential}"
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        kind = response.getheader("Content-Type", "")
        return response.status, dict(response.getheaders()), json.loads(data) if "json" in kind else data.decode()
    finally:
        connection.close()


def enroll(port, secret, name):
    status, _, answer = request(port, "POST", "/agent/v1/enroll", json.dumps({"token": secret, "name": name}).encode())
    assert status == 201, answer
    return answer["credential"]


def report(port, credential, body=None):
    status, _, answer = request(port, "POST", "/agent/v1/status", status_json() if body is None else body, credential)
    return status, answer


class TestTheAgentsServer:
    def test_a_host_enrolls_and_reports_and_an_unchanged_report_is_answered_from_redis(self, server, personas):
        _, secret = make_token(personas, pre_approved=True)
        credential = enroll(server.port, secret, "edge-01")
        assert report(server.port, credential) == (200, {"status": "changed", "state": HostState.RUNNING,
                                                         "actions": 0})
        assert report(server.port, credential) == (200, {"status": "unchanged", "state": HostState.RUNNING,
                                                         "actions": 0})
        host = Host.objects.get(team=personas.team, name="edge-01")
        assert host.booted_digest == "sha256:" + "a" * 64 and HostSnapshot.objects.filter(host=host).count() == 1
        # The seen marks reach the host's row (the server's own flush, within a second or two).
        seen = host.status_at
        wait_for(lambda: report(server.port, credential)[0] == 200
                 and Host.objects.get(pk=host.pk).status_at > seen, timeout=30, interval=0.5, what="the seen mark")
        status, _, answer = request(server.port, "POST", "/agent/v1/actions/next", credential=credential)
        assert (status, answer) == (200, {"action": None})

    def test_a_report_without_a_credential_or_with_an_unknown_one_is_refused(self, server, personas):
        assert report(server.port, None)[0] == 401
        assert report(server.port, "imh_" + "x" * 43)[0] == 401
        assert report(server.port, "not-a-credential")[0] == 401
        assert Host.objects.count() == 0

    def test_a_host_waiting_for_approval_is_refused(self, server, personas):
        _, secret = make_token(personas)
        credential = enroll(server.port, secret, "edge-01")
        status, answer = report(server.port, credential)
        assert status == 403 and "approv" in answer["error"]
        assert Host.objects.get(name="edge-01").booted_digest == ""

    def test_another_hosts_credential_updates_that_host_only(self, server, personas):
        _, secret = make_token(personas, uses=2, pre_approved=True)
        one, two = enroll(server.port, secret, "edge-01"), enroll(server.port, secret, "edge-02")
        report(server.port, one)
        report(server.port, two, status_json(digest="sha256:" + "c" * 64))
        # edge-02's status sent with edge-01's credential is a change of edge-01, never a report of edge-02.
        assert report(server.port, one, status_json(digest="sha256:" + "c" * 64))[1]["status"] == "changed"
        first, second = Host.objects.get(name="edge-01"), Host.objects.get(name="edge-02")
        assert first.booted_digest == second.booted_digest == "sha256:" + "c" * 64
        assert HostSnapshot.objects.filter(host=second).count() == 1

    def test_a_removed_hosts_credential_is_refused_at_once(self, server, personas):
        _, secret = make_token(personas, pre_approved=True)
        credential = enroll(server.port, secret, "edge-01")
        report(server.port, credential)
        assert report(server.port, credential)[1]["status"] == "unchanged"  # the front knows it
        host_delete(host=Host.objects.get(name="edge-01"), actor=personas.admin)
        assert report(server.port, credential)[0] == 401

    def test_it_serves_the_agents_endpoints_and_the_probes_only(self, server, personas):
        assert request(server.port, "GET", "/health/live")[0] == 200
        assert request(server.port, "GET", "/health/ready")[0] == 200
        for path in ("/", "/login/", "/api/v1/teams", "/ws/runs/1/", "/admin/"):
            status, headers, answer = request(server.port, "GET", path)
            assert status == 404 and "machine endpoints only (/agent/v1/)" in answer["error"], path
            assert "Set-Cookie" not in headers, path


class TestTheApplication:
    """The same application in this process, for what a server sends besides HTTP requests."""

    def test_lifespan_events_are_acknowledged(self):
        from portal.machine_server import application

        async def run():
            pending = [{"type": "lifespan.shutdown"}, {"type": "lifespan.startup"}]
            sent = []

            async def receive():
                return pending.pop()

            async def send(message):
                sent.append(message["type"])

            await application({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
            return sent

        assert async_to_sync(run)() == ["lifespan.startup.complete", "lifespan.shutdown.complete"]

    def test_a_websocket_is_closed(self):
        from portal.machine_server import application

        async def run():
            sent = []

            async def send(message):
                sent.append(message)

            await application({"type": "websocket", "path": "/ws/runs/1/", "headers": []}, None, send)
            return sent

        assert async_to_sync(run)() == [{"type": "websocket.close", "code": 1008}]
