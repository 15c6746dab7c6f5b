"""The run log websocket with an API token in the handshake's Authorization header (the CLI's follow): the same access
as a session (anonymous, outsider, read-only and allowed), the `read` scope, the API's rate limits, and the periodic
re-check closing a token revoked or expired while it watches."""

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from portal import live, loghub, services, tokens
from portal.asgi import application
from portal.models import AccessToken
from portal.socketauth import bearer_secret
from tests.portal.logsockets import make_run

# Each test gets a channel layer of its own (tests/portal/conftest.py says why).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("a_channel_layer_of_the_tests_own")]

CLOSE_UNAUTHENTICATED, CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_TOO_MANY = 4401, 4403, 4404, 4429


@pytest.fixture
def quick_recheck(monkeypatch):
    monkeypatch.setattr(loghub, "WATCH_SECONDS", 0.05)
    monkeypatch.setattr(loghub, "ACCESS_RECHECK_SECONDS", 0.2)


def socket(run, secret=None, cookie=None):
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    if secret is not None:
        headers.append((b"authorization", f"Bearer {secret}".encode()))
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    return WebsocketCommunicator(application, f"/ws/runs/{run.pk}/", headers=headers)


async def lines_until_status(comm, timeout=5):
    seqs = []
    while True:
        message = await comm.receive_json_from(timeout=timeout)
        if message["t"] == "lines":
            seqs.extend(range(message["first"], message["first"] + len(message["lines"])))
        if message["t"] == "status":
            return seqs


async def close_of(comm):
    connected, _ = await comm.connect()
    assert connected
    message = await comm.receive_output(timeout=5)
    assert message["type"] == "websocket.close", message
    return message["code"], message.get("reason", "")


def token_row(secret):
    return AccessToken.objects.get(token_hash=AccessToken.hash_secret(secret))


def session_cookie(user):
    from django.test import Client

    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    return f"sessionid={client.cookies['sessionid'].value}"


class TestWhoMayFollow:
    async def test_a_member_s_read_token_follows_the_log_to_its_status(self, personas, make_token):
        run, _ = await sync_to_async(make_run)(personas.team, lines=2)
        secret = await sync_to_async(make_token)(personas.viewer, "read")
        comm = socket(run, secret)
        connected, _ = await comm.connect()
        assert connected
        assert await lines_until_status(comm) == [1, 2]
        await comm.disconnect()

    async def test_the_developer_s_token_follows_and_hears_live_lines(self, personas, make_token):
        run, sink = await sync_to_async(make_run)(personas.team, lines=2)
        secret = await sync_to_async(make_token)(personas.developer)
        comm = socket(run, secret)
        await comm.connect()
        await lines_until_status(comm)
        await sync_to_async(lambda: (sink.write("line 3"), sink.flush(), live.wait_published()))()
        message = await comm.receive_json_from(timeout=5)
        assert (message["t"], message["first"], message["lines"]) == ("lines", 3, ["line 3"])
        await comm.disconnect()

    async def test_no_token_and_no_session_is_refused(self, personas):
        run, _ = await sync_to_async(make_run)(personas.team, lines=2)
        assert (await close_of(socket(run)))[0] == CLOSE_UNAUTHENTICATED

    async def test_an_unknown_token_is_refused_even_beside_a_valid_session(self, personas):
        run, _ = await sync_to_async(make_run)(personas.team, lines=2)
        cookie = await sync_to_async(session_cookie)(personas.viewer)
        assert (await close_of(socket(run, "impt_not-a-token", cookie)))[0] == CLOSE_UNAUTHENTICATED

    async def test_an_outsider_s_token_finds_no_such_run(self, personas, make_token):
        run, _ = await sync_to_async(make_run)(personas.team, lines=2)
        secret = await sync_to_async(make_token)(personas.outsider)
        assert (await close_of(socket(run, secret)))[0] == CLOSE_NOT_FOUND

    async def test_a_help_desk_token_may_not_read_a_build_log(self, personas, make_token):
        run, _ = await sync_to_async(make_run)(personas.team, lines=2)
        secret = await sync_to_async(make_token)(personas.helpdesk, "read")
        assert (await close_of(socket(run, secret)))[0] in (CLOSE_FORBIDDEN, CLOSE_NOT_FOUND)

    async def test_a_token_without_the_read_scope_is_refused_naming_it(self, personas, make_token):
        run, _ = await sync_to_async(make_run)(personas.team, lines=2)
        secret = await sync_to_async(make_token)(personas.developer, "build")
        code, reason = await close_of(socket(run, secret))
        assert code == CLOSE_FORBIDDEN
        assert "read" in reason

    async def test_a_team_token_follows_its_own_team_s_runs_only(self, personas, make_token):
        run, _ = await sync_to_async(make_run)(personas.team, lines=2)
        elsewhere, _ = await sync_to_async(make_run)(personas.other_team, lines=2)
        secret = await sync_to_async(make_token)(personas.admin, "read", "build", team=personas.team)
        comm = socket(run, secret)
        await comm.connect()
        assert await lines_until_status(comm) == [1, 2]
        await comm.disconnect()
        assert (await close_of(socket(elsewhere, secret)))[0] == CLOSE_NOT_FOUND

    async def test_handshakes_count_against_the_api_rate_limit_per_token(self, personas, make_token, settings):
        settings.API_RATE_LIMIT_PER_TOKEN = "1/m"
        run, _ = await sync_to_async(make_run)(personas.team, lines=2)
        secret = await sync_to_async(make_token)(personas.viewer, "read")
        first = socket(run, secret)
        await first.connect()
        await lines_until_status(first)
        code, reason = await close_of(socket(run, secret))
        assert code == CLOSE_TOO_MANY
        assert "retry in" in reason.lower()
        await first.disconnect()


class TestTheRecheck:
    async def test_a_token_revoked_while_watching_is_closed_out_and_hears_nothing_more(self, personas, make_token,
                                                                                        quick_recheck):
        run, sink = await sync_to_async(make_run)(personas.team, lines=2)
        secret = await sync_to_async(make_token)(personas.viewer, "read")
        comm = socket(run, secret)
        await comm.connect()
        await lines_until_status(comm)
        token = await sync_to_async(token_row)(secret)
        await sync_to_async(tokens.token_revoke)(token=token, actor=personas.viewer)
        assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}
        await sync_to_async(lambda: (sink.write("after the revocation"), sink.flush(), live.wait_published()))()
        assert await comm.receive_nothing(timeout=0.3)

    async def test_a_token_that_expires_while_watching_is_closed_out(self, personas, make_token, quick_recheck):
        run, _ = await sync_to_async(make_run)(personas.team, lines=2)
        secret = await sync_to_async(make_token)(personas.viewer, "read")
        comm = socket(run, secret)
        await comm.connect()
        await lines_until_status(comm)
        await sync_to_async(AccessToken.objects.filter(token_hash=AccessToken.hash_secret(secret)).update)(
            expires_at=timezone.now() - timedelta(seconds=1))
        assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}

    async def test_a_token_whose_user_leaves_the_team_is_closed_out(self, personas, make_token, quick_recheck):
        run, _ = await sync_to_async(make_run)(personas.team, lines=2)
        secret = await sync_to_async(make_token)(personas.viewer, "read")
        comm = socket(run, secret)
        await comm.connect()
        await lines_until_status(comm)
        await sync_to_async(services.membership_remove)(team=personas.team, user=personas.viewer, actor=None)
        assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": CLOSE_NOT_FOUND}

    async def test_a_token_still_good_keeps_watching_through_rechecks(self, personas, make_token, quick_recheck):
        run, sink = await sync_to_async(make_run)(personas.team, lines=2)
        secret = await sync_to_async(make_token)(personas.viewer, "read")
        comm = socket(run, secret)
        await comm.connect()
        await lines_until_status(comm)
        await asyncio.sleep(0.6)  # a few re-checks pass
        await sync_to_async(lambda: (sink.write("line 3"), sink.flush(), live.wait_published()))()
        message = await comm.receive_json_from(timeout=5)
        assert message["first"] == 3
        await comm.disconnect()


def test_the_bearer_secret_is_read_from_the_header_only():
    assert bearer_secret({"headers": [(b"authorization", b"Bearer impt_abc ")]}) == "impt_abc"
    assert bearer_secret({"headers": [(b"authorization", b"Basic xyz")]}) is None  # a proxy's password: the session's
    assert bearer_secret({"headers": [], "query_string": b"token=impt_abc"}) is None
