"""Who may watch a run's log over the websocket: access on connect (anonymous, outsider, help-desk, viewer), the cap on
each user's open sockets and their leases, and access asked again while a socket is open."""

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from portal import live, services
from portal.asgi import application
from portal.consumers import CLOSE_BAD_REQUEST, CLOSE_NOT_FOUND, CLOSE_TOO_MANY, CLOSE_UNAUTHENTICATED
from portal.models import RunKind
from tests.portal.logsockets import (
    close_code,
    communicator,
    lines_of,
    make_run,
    receive_until,
    receive_until_status,
    session_cookie,
)

# Each test gets a channel layer of its own (tests/portal/conftest.py says why).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("a_channel_layer_of_the_tests_own")]


class TestAccess:
    async def test_anonymous_is_refused(self, async_personas):
        run, _ = await sync_to_async(make_run)(async_personas.team)
        from django.contrib.auth.models import AnonymousUser

        assert await close_code(communicator(run.pk, AnonymousUser())) == CLOSE_UNAUTHENTICATED

    async def test_outsiders_get_not_found_and_no_lines(self, async_personas):
        run, _ = await sync_to_async(make_run)(async_personas.team, lines=5)
        comm = communicator(run.pk, async_personas.outsider)
        assert await close_code(comm) == CLOSE_NOT_FOUND
        assert await comm.receive_nothing(timeout=0.2)

    async def test_unknown_runs_get_not_found(self, async_personas):
        assert await close_code(communicator(987654, async_personas.developer)) == CLOSE_NOT_FOUND

    async def test_helpdesk_cannot_watch_a_build(self, async_personas):
        run, _ = await sync_to_async(make_run)(async_personas.team)
        assert await close_code(communicator(run.pk, async_personas.helpdesk)) == CLOSE_NOT_FOUND

    async def test_helpdesk_may_watch_a_host_action(self, async_personas):
        run, _ = await sync_to_async(make_run)(async_personas.team, lines=2, kind=RunKind.HOST_ACTION)
        comm = communicator(run.pk, async_personas.helpdesk)
        assert (await comm.connect())[0]
        assert lines_of(await receive_until_status(comm))[0] == [1, 2]
        await comm.disconnect()

    async def test_viewers_may_watch(self, async_personas):
        run, _ = await sync_to_async(make_run)(async_personas.team, lines=3)
        comm = communicator(run.pk, async_personas.viewer)
        assert (await comm.connect())[0]
        assert lines_of(await receive_until_status(comm))[0] == [1, 2, 3]
        await comm.disconnect()

    async def test_a_bad_after_is_a_bad_request(self, async_personas):
        run, _ = await sync_to_async(make_run)(async_personas.team)
        assert await close_code(communicator(run.pk, async_personas.viewer, after="-3")) == CLOSE_BAD_REQUEST


class TestOpenSocketsPerUser:
    async def test_a_socket_over_the_users_cap_is_refused_with_4429_saying_why(self, async_personas, settings):
        settings.RUN_LOG_SOCKETS_PER_USER = 2
        run, _ = await sync_to_async(make_run)(async_personas.team, lines=1)
        open_ones = [communicator(run.pk, async_personas.viewer) for _ in range(2)]
        for comm in open_ones:
            assert (await comm.connect())[0]
            await receive_until_status(comm)
        extra = communicator(run.pk, async_personas.viewer)
        assert (await extra.connect())[0]
        closed = await extra.receive_output(timeout=5)
        assert closed["type"] == "websocket.close" and closed["code"] == CLOSE_TOO_MANY
        assert closed["reason"] == "You have 2 live logs open, the most allowed: this one is read by polling."
        other_user = communicator(run.pk, async_personas.developer)  # the cap is per user
        assert (await other_user.connect())[0]
        assert lines_of(await receive_until_status(other_user))[0] == [1]
        await open_ones[0].disconnect()  # a closed socket gives its place back
        again = communicator(run.pk, async_personas.viewer)
        assert (await again.connect())[0]
        assert lines_of(await receive_until_status(again))[0] == [1]
        for comm in (open_ones[1], other_user, again):
            await comm.disconnect()

    async def test_sockets_refused_for_access_take_no_place(self, async_personas, settings):
        settings.RUN_LOG_SOCKETS_PER_USER = 1
        run, _ = await sync_to_async(make_run)(async_personas.team, lines=1)
        for _ in range(3):
            assert await close_code(communicator(run.pk, async_personas.outsider)) == CLOSE_NOT_FOUND
            assert await close_code(communicator(run.pk, async_personas.viewer, after="x")) == CLOSE_BAD_REQUEST
        comm = communicator(run.pk, async_personas.viewer)
        assert (await comm.connect())[0]
        await receive_until_status(comm)
        await comm.disconnect()


def test_the_lease_of_a_socket_whose_process_died_runs_out(personas, settings):
    from portal import sockets

    settings.RUN_LOG_SOCKETS_PER_USER = 1
    user = personas.viewer.pk
    assert sockets.socket_open(user, "tab-1", now=1000)
    assert not sockets.socket_open(user, "tab-2", now=1000 + sockets.LEASE_SECONDS - 1)
    sockets.socket_renew(user, "tab-1", now=1000 + sockets.LEASE_SECONDS - 1)  # alive: its lease is extended
    assert not sockets.socket_open(user, "tab-2", now=1000 + sockets.LEASE_SECONDS + 1)
    # The process died: no renewal, no close. The lease runs out and another socket may open.
    assert sockets.socket_open(user, "tab-2", now=1000 + 2 * sockets.LEASE_SECONDS)
    sockets.socket_renew(user, "tab-1", now=1000 + 2 * sockets.LEASE_SECONDS)  # a late renewal takes nothing back
    assert not sockets.socket_open(user, "tab-3", now=1000 + 2 * sockets.LEASE_SECONDS)


def test_a_process_renews_the_leases_of_all_its_sockets_at_once(personas, settings):
    from portal import sockets

    settings.RUN_LOG_SOCKETS_PER_USER = 2
    viewer, developer = personas.viewer.pk, personas.developer.pk
    for user, socket in ((viewer, "v1"), (viewer, "v2"), (developer, "d1")):
        assert sockets.socket_open(user, socket, now=1000)
    sockets.sockets_renew([(viewer, "v1"), (viewer, "v2"), (developer, "d1")], now=1000 + sockets.LEASE_SECONDS - 1)
    assert not sockets.socket_open(viewer, "v3", now=1000 + sockets.LEASE_SECONDS + 1)  # both leases held
    sockets.sockets_renew([(viewer, "v1")], now=1000 + 2 * sockets.LEASE_SECONDS - 2)
    assert sockets.socket_open(viewer, "v3", now=1000 + 2 * sockets.LEASE_SECONDS)  # v2's ran out, v1's did not
    assert not sockets.socket_open(viewer, "v4", now=1000 + 2 * sockets.LEASE_SECONDS)


def test_sockets_are_let_through_when_redis_does_not_answer(personas, settings):
    from portal import sockets

    settings.RUN_LOG_SOCKETS_PER_USER = 1
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    assert sockets.socket_open(personas.viewer.pk, "a") and sockets.socket_open(personas.viewer.pk, "b")
    sockets.socket_renew(personas.viewer.pk, "a")
    sockets.socket_close(personas.viewer.pk, "a")


class TestAccessWhileWatching:
    @pytest.fixture
    def quick_recheck(self, monkeypatch):
        from portal import loghub

        monkeypatch.setattr(loghub, "WATCH_SECONDS", 0.05)
        monkeypatch.setattr(loghub, "ACCESS_RECHECK_SECONDS", 0.2)

    async def test_a_member_removed_from_the_team_is_closed_out_and_gets_no_more_lines(self, async_personas,
                                                                                        quick_recheck):
        run, sink = await sync_to_async(make_run)(async_personas.team, lines=2)
        # Signed in by a session cookie, as in a browser: Channels' AuthMiddleware gives the consumer a lazy user.
        cookie = await sync_to_async(session_cookie)(async_personas.viewer)
        comm = WebsocketCommunicator(application, f"/ws/runs/{run.pk}/", headers=[
            (b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"), (b"cookie", cookie.encode())])
        await comm.connect()
        assert lines_of(await receive_until_status(comm))[0] == [1, 2]
        await sync_to_async(services.membership_remove)(team=async_personas.team, user=async_personas.viewer, actor=None)
        message = await comm.receive_output(timeout=3)
        assert message == {"type": "websocket.close", "code": CLOSE_NOT_FOUND}
        await sync_to_async(lambda: (sink.write("written after the removal"), sink.flush(), live.wait_published()))()
        assert await comm.receive_nothing(timeout=0.3)

    async def test_every_socket_of_a_removed_member_is_closed_and_a_reconnect_is_refused(self, async_personas,
                                                                                           quick_recheck):
        run, sink = await sync_to_async(make_run)(async_personas.team, lines=1)
        theirs = [communicator(run.pk, async_personas.viewer) for _ in range(3)]
        others = communicator(run.pk, async_personas.developer)
        for comm in [*theirs, others]:
            await comm.connect()
            await receive_until_status(comm)
        await sync_to_async(services.membership_remove)(team=async_personas.team, user=async_personas.viewer, actor=None)
        for comm in theirs:
            assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": CLOSE_NOT_FOUND}
        # Access on connect is remembered for a while, but never past a re-check that refused it. (A fresh user, as
        # each handshake's own: a user object keeps the roles it read.)
        again = await sync_to_async(type(async_personas.viewer).objects.get)(pk=async_personas.viewer.pk)
        assert await close_code(communicator(run.pk, again)) == CLOSE_NOT_FOUND
        await sync_to_async(lambda: (sink.write("line 2"), sink.flush(), live.wait_published()))()
        assert lines_of(await receive_until(others, lambda m: m["t"] == "lines"))[0] == [2]
        for comm in theirs:
            assert await comm.receive_nothing(timeout=0.1)
        await others.disconnect()

    async def test_a_member_who_stays_keeps_watching(self, async_personas, quick_recheck):
        run, sink = await sync_to_async(make_run)(async_personas.team, lines=1)
        comm = communicator(run.pk, async_personas.viewer)
        await comm.connect()
        await receive_until_status(comm)
        await asyncio.sleep(0.5)  # a few access checks pass
        await sync_to_async(lambda: (sink.write("line 2"), sink.flush(), live.wait_published()))()
        assert lines_of(await receive_until(comm, lambda m: m["t"] == "lines"))[0] == [2]
        await comm.disconnect()

    async def test_signing_out_elsewhere_closes_the_socket(self, async_personas, quick_recheck):
        from django.contrib.sessions.models import Session

        run, _ = await sync_to_async(make_run)(async_personas.team, lines=1)
        cookie = await sync_to_async(session_cookie)(async_personas.viewer)
        comm = WebsocketCommunicator(application, f"/ws/runs/{run.pk}/", headers=[
            (b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"), (b"cookie", cookie.encode())])
        await comm.connect()
        await receive_until_status(comm)
        key = cookie.partition("=")[2]
        await sync_to_async(Session.objects.filter(session_key=key).delete)()  # what logging out does
        assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}

    async def test_a_password_changed_in_another_session_closes_the_socket(self, async_personas, quick_recheck):
        run, _ = await sync_to_async(make_run)(async_personas.team, lines=1)
        cookie = await sync_to_async(session_cookie)(async_personas.viewer)
        comm = WebsocketCommunicator(application, f"/ws/runs/{run.pk}/", headers=[
            (b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"), (b"cookie", cookie.encode())])
        await comm.connect()
        await receive_until_status(comm)

        def change_password():
            async_personas.viewer.set_password("a new and longer secret")
            async_personas.viewer.save()

        await sync_to_async(change_password)()
        assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}

    async def test_a_session_idle_too_long_closes_the_socket(self, async_personas, quick_recheck, settings):
        from importlib import import_module

        run, _ = await sync_to_async(make_run)(async_personas.team, lines=1)
        cookie = await sync_to_async(session_cookie)(async_personas.viewer)
        comm = WebsocketCommunicator(application, f"/ws/runs/{run.pk}/", headers=[
            (b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"), (b"cookie", cookie.encode())])
        await comm.connect()
        await receive_until_status(comm)

        def last_active_long_ago():
            session = import_module(settings.SESSION_ENGINE).SessionStore(session_key=cookie.partition("=")[2])
            session["portal_last_activity"] = int(time.time()) - settings.SESSION_IDLE_MINUTES * 60 - 5
            session.save()

        await sync_to_async(last_active_long_ago)()
        assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}

    async def test_a_disabled_account_is_signed_out_of_the_socket(self, async_personas, quick_recheck):
        run, _ = await sync_to_async(make_run)(async_personas.team, lines=1)
        comm = communicator(run.pk, async_personas.developer)
        await comm.connect()
        await receive_until_status(comm)
        await sync_to_async(type(async_personas.developer).objects.filter(pk=async_personas.developer.pk).update)(
            is_active=False)
        assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}
