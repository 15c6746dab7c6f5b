"""The report front: an unchanged status answered in the event loop from Redis, everything else handed to Django with
its body, under the same rules (the credential names the host, the per-host rate, the size cap). Real PostgreSQL and
Redis; requests go through the ASGI applications as a server would send them."""

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync
from django.core.asgi import get_asgi_application

from hosts import agentcache, reportin
from hosts.actions import host_action_request
from hosts.agent_front import AgentFront
from hosts.models import ActionKind, EventKind, Host, HostSnapshot, HostState
from hosts.services import host_delete
from tests.hosts.reportin_fixtures import Agent, make_token, status_json
from tests.plugins.redis_server import broker_stopped

STATUS = "/agent/v1/status"


class Django:
    """Django's own ASGI app behind the front, counting the requests the front hands on."""

    def __init__(self):
        self.app = get_asgi_application()
        self.calls = 0

    async def __call__(self, scope, receive, send):
        self.calls += 1
        return await self.app(scope, receive, send)


class Answer:
    def __init__(self, status, headers, body):
        self.status_code, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def post(app, body, credential=None, path=STATUS, length=None):
    """One POST through the ASGI app `app`, as daphne sends it."""

    async def call():
        headers = [(b"host", b"testserver"), (b"content-type", b"application/json"),
                   (b"content-length", str(len(body) if length is None else length).encode())]
        if credential:
            headers.append((b"authorization", f"Bearer {credential}".encode()))
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": headers,
                 "client": ("203.0.113.7", 40000), "server": ("testserver", 80)}
        pending = [{"type": "http.request", "body": body, "more_body": False}]
        sent = []

        async def receive():
            if pending:
                return pending.pop()
            await asyncio.Event().wait()  # the client stays until the answer

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        return Answer(start["status"], dict(start["headers"]),
                      b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))

    return async_to_sync(call)()


@pytest.fixture
def front():
    """The front with Django behind it. The seen marks' flush lock is held, so the marks stay in Redis until a test
    flushes them (the front's own flush is shown in one test)."""
    client = agentcache._client()
    client.delete(*client.keys(agentcache.PREFIX + "*") or [agentcache.SEEN_KEY])
    client.set(agentcache.FLUSH_LOCK_KEY, "1", ex=600)
    django = Django()
    yield AgentFront(django), django
    client.delete(agentcache.FLUSH_LOCK_KEY)


@pytest.fixture
def enrolled(transactional_db, personas):
    """Two approved hosts that report in, with their credentials."""
    _, secret = make_token(personas, uses=2, pre_approved=True)
    one, two = Agent(), Agent()
    one.enroll(secret, name="edge-01")
    two.enroll(secret, name="edge-02")
    return one.credential, two.credential


def seen_marks():
    return {int(k): float(v) for k, v in agentcache._client().hgetall(agentcache.SEEN_KEY).items()}


class TestTheFront:
    def test_an_unchanged_report_is_answered_without_django(self, front, enrolled):
        app, django = front
        credential, _ = enrolled
        first = post(app, status_json(), credential)
        assert first.status_code == 200 and first.json()["status"] == "changed" and django.calls == 1
        again = post(app, status_json(), credential)
        assert again.status_code == 200 and django.calls == 1
        assert again.json() == {"status": "unchanged", "state": HostState.RUNNING, "actions": 0}
        assert again.headers[b"content-type"] == b"application/json"
        host = Host.objects.get(name="edge-01")
        assert host.pk in seen_marks() and HostSnapshot.objects.filter(host=host).count() == 1
        before = host.status_at
        assert reportin.flush_last_seen() >= 1
        host.refresh_from_db()
        assert host.status_at > before

    def test_a_changed_report_goes_through_django_and_the_timeline(self, front, enrolled):
        app, django = front
        credential, _ = enrolled
        post(app, status_json(), credential)
        staged = post(app, status_json(staged="sha256:" + "b" * 64), credential)
        assert staged.json()["status"] == "changed" and django.calls == 2
        host = Host.objects.get(name="edge-01")
        assert host.state == HostState.UPDATE_STAGED and host.events.filter(kind=EventKind.STAGED).exists()
        assert post(app, status_json(staged="sha256:" + "b" * 64), credential).json()["status"] == "unchanged"
        assert django.calls == 2

    def test_a_credential_names_its_own_host_only(self, front, enrolled):
        app, _ = front
        one, two = enrolled
        post(app, status_json(), one)
        post(app, status_json(digest="sha256:" + "c" * 64), two)
        # The second host's status, sent with the first host's credential, is a change of the first host.
        assert post(app, status_json(digest="sha256:" + "c" * 64), one).json()["status"] == "changed"
        first, second = Host.objects.get(name="edge-01"), Host.objects.get(name="edge-02")
        assert first.booted_digest == second.booted_digest == "sha256:" + "c" * 64
        assert HostSnapshot.objects.filter(host=second).count() == 1
        assert post(app, status_json(digest="sha256:" + "c" * 64), two).json()["status"] == "unchanged"
        assert set(seen_marks()) == {second.pk}

    def test_unknown_credentials_and_other_requests_get_djangos_answer(self, front, enrolled):
        app, django = front
        assert post(app, status_json(), "imh_" + "x" * 43).status_code == 401
        assert post(app, status_json(), "not-a-credential").status_code == 401
        assert post(app, status_json()).status_code == 401
        assert post(app, b"", enrolled[0], path="/agent/v1/actions/next").json() == {"action": None}
        assert django.calls == 4

    def test_a_host_waiting_for_approval_is_refused(self, front, transactional_db, personas):
        app, _ = front
        _, secret = make_token(personas)
        agent = Agent()
        agent.enroll(secret)
        assert post(app, status_json(), agent.credential).status_code == 403
        assert post(app, status_json(), agent.credential).status_code == 403

    def test_the_per_host_rate_counts_reports_at_the_front_too(self, front, enrolled, settings):
        settings.HOSTS_AGENT_RATE_LIMIT_PER_HOST = "3/d"
        app, django = front
        credential, other = enrolled
        codes = [post(app, status_json(), credential).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429] and django.calls == 1
        refused = post(app, status_json(), credential)
        assert int(refused.headers[b"retry-after"]) > 0 and "3 per day" in refused.json()["error"]
        assert post(app, status_json(), other).status_code == 200  # per host

    def test_an_oversize_report_is_refused_by_django_with_the_cap(self, front, enrolled, settings):
        settings.HOSTS_MAX_STATUS_BYTES = 10_000
        app, _ = front
        credential, _ = enrolled
        post(app, status_json(), credential)
        refused = post(app, b" " * 10_001, credential)
        assert refused.status_code == 413 and "10000 bytes" in refused.json()["error"]
        host = Host.objects.get(name="edge-01")
        assert host.state == HostState.UNREADABLE
        # The host's entry is gone: its next report is read again, and brings it back.
        assert post(app, status_json(), credential).json()["status"] == "changed"
        assert Host.objects.get(name="edge-01").state == HostState.RUNNING

    def test_a_report_that_is_not_a_status_is_refused_and_read_again_next_time(self, front, enrolled):
        app, _ = front
        credential, _ = enrolled
        post(app, status_json(), credential)
        assert post(app, b'{"kind": "Pod"}', credential).status_code == 422
        assert post(app, b'{"kind": "Pod"}', credential).status_code == 422  # never cached
        assert post(app, status_json(), credential).json()["status"] == "changed"

    def test_an_action_ordered_is_in_the_fronts_answer_until_the_agent_takes_it(self, front, enrolled, personas):
        app, _ = front
        credential, _ = enrolled
        post(app, status_json(), credential)
        host = Host.objects.get(name="edge-01")
        host_action_request(host=host, kind=ActionKind.UPGRADE_STAGE, user=personas.operator)
        assert post(app, status_json(), credential).json() == {"status": "unchanged", "state": HostState.RUNNING,
                                                               "actions": 1}
        taken = post(app, b"", credential, path="/agent/v1/actions/next").json()
        assert taken["kind"] == ActionKind.UPGRADE_STAGE
        assert post(app, status_json(), credential).json()["actions"] == 0

    def test_a_deleted_hosts_credential_is_refused_at_once(self, front, enrolled, personas):
        app, _ = front
        credential, _ = enrolled
        post(app, status_json(), credential)
        host_delete(host=Host.objects.get(name="edge-01"), actor=personas.admin)
        assert post(app, status_json(), credential).status_code == 401

    def test_a_host_whose_row_is_no_longer_current_leaves_the_front_at_the_next_flush(self, front, enrolled):
        app, django = front
        credential, _ = enrolled
        post(app, status_json(), credential)
        post(app, status_json(), credential)
        # Marked offline while its report was on its way (the sweep runs in another process).
        Host.objects.filter(name="edge-01").update(state=HostState.UNREACHABLE, reachable=False, failures=3)
        reportin.flush_last_seen()
        assert post(app, status_json(), credential).json()["status"] == "changed" and django.calls == 2
        assert Host.objects.get(name="edge-01").state == HostState.RUNNING

    def test_the_front_writes_the_seen_marks_itself(self, front, enrolled):
        app, _ = front
        credential, _ = enrolled
        post(app, status_json(), credential)
        before = Host.objects.get(name="edge-01").status_at
        agentcache._client().delete(agentcache.FLUSH_LOCK_KEY)
        post(app, status_json(), credential)
        for _ in range(100):  # the flush runs in a thread of its own
            if Host.objects.get(name="edge-01").status_at > before:
                break
            asyncio.run(asyncio.sleep(0.05))
        assert Host.objects.get(name="edge-01").status_at > before

    def test_without_redis_django_answers_every_report(self, front, enrolled, redis_server):
        app, django = front
        credential, _ = enrolled
        post(app, status_json(), credential)
        with broker_stopped(redis_server):
            answer = post(app, status_json(), credential)
        assert answer.status_code == 200 and answer.json()["status"] == "unchanged" and django.calls == 2

    def test_the_portals_asgi_application_has_the_front(self, front, enrolled):
        from portal.asgi import application

        credential, _ = enrolled
        assert post(application, status_json(), credential).json()["status"] == "changed"
        assert post(application, status_json(), credential).json()["status"] == "unchanged"
