"""The live log of a run over a websocket: `/ws/runs/<id>/?after=<seq>`.

On connect: check access (the run page's own helper), make sure this process listens to the run's group, send the
stored lines after the client's `after` (at most BACKLOG_MAX_LINES of them: an older remainder is announced with a
"skip" message, and the viewer loads it over HTTP when it is scrolled to), send the status, then forward live batches,
dropping lines already sent and filling any gap from the database. A client that reconnects with
`?after=<last seq it has>` resumes with no gap and no duplicate. While the socket is open, access is asked again every
ACCESS_RECHECK_SECONDS: a user removed from the team (or disabled), signed out, idle for SESSION_IDLE_MINUTES or whose
password was changed in another session is closed out with the same codes. A client that is not a browser (the CLI)
connects with an API token in the `Authorization` header instead of a session (portal/socketauth.py says why a header);
a token revoked or expired since is closed out at the same re-check.

One `RunHub` per web process and run is the group's member, however many sockets of the process watch the run: it
receives each batch once and hands it to each socket (as group members, hundreds of sockets would each go through
Channels' per-consumer receive machinery for every batch). The hub renews its membership (Redis forgets every
membership when it restarts).

The hub also keeps the process ahead of a fast log watched by many sockets. Handing a batch to every socket costs the
process time in proportion to the sockets (each send goes through Channels, daphne and the websocket framing), so
after a round that kept it busy, the hub waits about as long again (at most HUB_HOLD_MAX_SECONDS) while batches
gather, and hands what gathered to each socket as one message (`logsink.merge_batch_messages`). A few sockets cost
microseconds a round, and their batches go out as they come; hundreds get fewer, larger messages, so the work per line
falls as the sockets grow instead of the process falling behind the log (bench/README.md, "logs").

The database is the source of truth; the channel layer only makes it fast. So each socket has a watchdog: while the run
is active and no batch came through the layer for a while, it reads new lines and the status from the database. Lines
are sent under one lock per socket, so the watchdog and live batches never interleave.

Messages to the browser (JSON):
  {"t": "lines", "first": N, "lines": [...], "times": [ms, ...],
   "sections": [[seq, kind, title, ms], ...], "cut": [[seq, full length], ...]}   (the last two only when not empty)
  {"t": "skip", "from": A, "to": B}      lines A..B exist but are not sent: fetch them over HTTP when needed
  {"t": "status", "status": "running", "finished": false, "html": {"status": "...", "result": "..."}, ...}
  {"t": "ping"}                            every HEARTBEAT_SECONDS; the client answers nothing (it may send "ping" for a "pong")
Close codes: 4401 not logged in, 4403 not allowed, 4404 no such run (or not visible), 4400 bad request, 4429 the user
has RUN_LOG_SOCKETS_PER_USER log sockets open already (portal/sockets.py; the viewer polls over HTTP instead).
"""

import asyncio
import itertools
import json
import logging
import time
import uuid
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.template.loader import render_to_string

from . import logsink, sessions, socketauth, sockets
from .access import get_run_for_user
from .models import FINISHED_STATUSES, Run

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 20
WATCH_SECONDS = 2.0
# While the run is active, the database is read when no batch came through the channel layer for this long; while it
# stays quiet, the wait doubles up to CATCH_UP_MAX_SECONDS (a quiet build with 500 viewers costs a few queries a second).
CATCH_UP_AFTER_SECONDS = 4.0
CATCH_UP_MAX_SECONDS = 16.0
# The hub renews its group membership this often (it also expires in the channel layer after a day).
GROUP_RENEW_SECONDS = 10.0
# After a round of deliveries that kept the process busy for at least HUB_HOLD_AFTER_SECONDS, the hub lets batches
# gather for HUB_HOLD_FACTOR times as long, at most HUB_HOLD_MAX_SECONDS, before the next round.
HUB_HOLD_AFTER_SECONDS = 0.002
HUB_HOLD_FACTOR = 1.0
HUB_HOLD_MAX_SECONDS = 0.1
# An open socket asks the access helper again this often: someone removed from the team (or disabled) stops receiving.
ACCESS_RECHECK_SECONDS = 60.0
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_BAD_REQUEST = 4400
CLOSE_TOO_MANY = 4429
# Stored lines are read a few chunks at a time, so memory stays bounded by the chunk size.
BACKLOG_CHUNKS_PER_READ = 4
# A (re)connecting client gets at most this many stored lines pushed; older ones are announced with "skip".
BACKLOG_MAX_LINES = 5000


def status_message(run):
    """The "status" message for `run`, as JSON, with the badge and result rendered by the page's own templates."""
    duration = run.duration()
    return json.dumps(
        {
            "t": "status",
            "status": run.status,
            "label": run.get_status_display(),
            "phase": run.phase,
            "exit_reason": run.exit_reason,
            "finished": run.is_finished,
            "log_lines": run.log_lines,
            "duration_s": duration.total_seconds() if duration else None,
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "html": {
                "status": render_to_string("includes/_run_status.html", {"run": run}),
                "result": render_to_string("portal/_run_result.html", {"run": run}),
            },
        }
    )


def read_status(run_id):
    """(run, its status message, the last stored line): what a status change needs, read once."""
    run = Run.objects.select_related("team", "started_by").get(pk=run_id)
    return run, status_message(run), logsink.last_seq(run)


class RunHub:
    """This process's member of one run's group: receives each message once and hands it to the sockets watching the
    run here. Created by the first socket, gone with the last."""

    hubs = {}  # (event loop, group) -> hub

    def __init__(self, group, run_id):
        self.layer, self.group, self.run_id = get_channel_layer(), group, run_id
        self.key = (asyncio.get_running_loop(), group)
        self.sockets = set()
        self.channel = None
        self.joined = False
        self.last_renew = 0.0
        self.ready = asyncio.Event()
        self.inbox = []  # messages received and not yet delivered, in order
        self.arrived = asyncio.Event()
        self.task = asyncio.create_task(self.main())

    @classmethod
    async def enter(cls, socket):
        """The hub of the socket's run (joining the group first if it is new), with the socket in it."""
        key = (asyncio.get_running_loop(), socket.group)
        hub = cls.hubs.get(key)
        if hub is None or hub.task.done():
            hub = cls.hubs[key] = cls(socket.group, socket.run.pk)
        hub.sockets.add(socket)
        await hub.ready.wait()
        return hub

    async def leave(self, socket):
        """Take the socket out; the last one out stops the hub (and waits for it: the channel layer must not be left
        with a receive in progress)."""
        self.sockets.discard(socket)
        if self.sockets:
            return
        if self.hubs.get(self.key) is self:
            del self.hubs[self.key]
        self.task.cancel()
        try:
            await self.task
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping; whatever it was doing is over
            pass

    async def join(self):
        try:
            await self.layer.group_add(self.group, self.channel)
            self.joined = True
        except Exception as exc:  # noqa: BLE001 - the sockets' watchdogs read the database meanwhile
            if self.joined or not self.ready.is_set():
                log.warning("run %s: could not join %s (%s); reading the database until the channel layer is back",
                            self.run_id, self.group, exc)
            self.joined = False
        self.last_renew = time.monotonic()

    async def main(self):
        renew = receiver = None
        try:
            self.channel = await self.layer.new_channel()
            await self.join()
            self.ready.set()
            renew = asyncio.create_task(self.renew())
            receiver = asyncio.create_task(self.receive_forever())
            while True:
                await self.arrived.wait()
                if receiver.done():
                    receiver.result()  # the channel layer's error ends the hub; the next socket starts a new one
                self.arrived.clear()
                messages, self.inbox = self.inbox, []
                started = time.monotonic()
                for message in logsink.merge_batch_messages(messages):
                    await self.deliver(message)
                busy = time.monotonic() - started
                if busy >= HUB_HOLD_AFTER_SECONDS:
                    await asyncio.sleep(min(busy * HUB_HOLD_FACTOR, HUB_HOLD_MAX_SECONDS))
        finally:
            self.ready.set()
            if renew:
                renew.cancel()
            if receiver:
                receiver.cancel()  # and waited for: the channel layer must not be left with a receive in progress
                try:
                    await receiver
                except (Exception, asyncio.CancelledError):  # noqa: BLE001 - stopping; its outcome no longer matters
                    pass
            if self.joined:
                try:
                    await self.layer.group_discard(self.group, self.channel)
                except (Exception, asyncio.CancelledError):  # noqa: BLE001 - the membership expires on its own
                    pass

    async def receive_forever(self):
        """Takes messages off the channel layer as they come, whatever the delivering side is doing."""
        try:
            while True:
                message = await self.layer.receive(self.channel)
                self.inbox.append(message)  # the list of now: main() swaps it for a new one as it takes the messages
                self.arrived.set()
        finally:
            self.arrived.set()  # wakes main(), which ends with this task's error

    async def renew(self):
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            if not self.joined or time.monotonic() - self.last_renew >= GROUP_RENEW_SECONDS:
                await self.join()

    async def deliver(self, message):
        kind = message.get("type")
        if kind == "log.lines":
            for socket in list(self.sockets):
                try:
                    await socket.offer_lines(message)
                except Exception:  # noqa: BLE001 - one broken socket must not stop the others
                    log.exception("run %s: could not hand a batch to a socket", self.run_id)
        elif kind == "run.status":
            try:
                run, payload, stored_last = await database_sync_to_async(read_status)(self.run_id)
            except Exception:  # noqa: BLE001 - the sockets' watchdogs read the status again from the database
                log.exception("run %s: could not read its status", self.run_id)
                return
            for socket in list(self.sockets):
                asyncio.create_task(socket.apply_status(run, payload, stored_last))


class RunLogConsumer(AsyncWebsocketConsumer):
    # No channel of its own: the run's hub receives for every socket of the process.
    channel_layer_alias = "(none: RunHub receives for the sockets)"
    run = None
    group = None
    hub = None
    last_sent = 0
    finished_sent = False
    watch_task = None
    socket_id = None

    async def connect(self):
        await self.accept()  # accept first, so the close code reaches the client
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        try:
            after = int(parse_qs(self.scope.get("query_string", b"").decode()).get("after", ["0"])[0])
            if after < 0:
                raise ValueError
        except ValueError:
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        try:
            self.run = await database_sync_to_async(get_run_for_user)(user, self.scope["url_route"]["kwargs"]["pk"])
        except Http404:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        except PermissionDenied:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        socket_id = uuid.uuid4().hex
        if not await sync_to_async(sockets.socket_open, thread_sensitive=False)(user.pk, socket_id):
            limit = settings.RUN_LOG_SOCKETS_PER_USER
            await self.close(code=CLOSE_TOO_MANY, reason=f"You have {limit} live logs open, the most allowed: "
                                                         "this one is read by polling.")
            return
        self.socket_id, self.user_id = socket_id, user.pk
        self.lock = asyncio.Lock()
        self.group = self.run.group_name()
        self.last_live = self.last_catch_up = time.monotonic()
        self.catch_up_wait = CATCH_UP_AFTER_SECONDS
        self.last_sent = after
        async with self.lock:  # batches the hub hands over meanwhile wait for the backlog
            self.hub = await RunHub.enter(self)  # listening first, so no batch written from here on is missed
            await self.send_stored(up_to=None)
            run = await self.current_run()
            await self.send_status(await database_sync_to_async(status_message)(run), run.is_finished)
        self.watch_task = asyncio.create_task(self.watch())

    async def disconnect(self, code):
        if self.watch_task:
            self.watch_task.cancel()
        if self.hub:
            await self.hub.leave(self)
        if self.socket_id:
            socket_id, self.socket_id = self.socket_id, None
            await sync_to_async(sockets.socket_close, thread_sensitive=False)(self.user_id, socket_id)

    async def receive(self, text_data=None, bytes_data=None):
        """The client may only say "ping"; anything else is ignored."""
        if text_data == "ping":
            await self.send(text_data='{"t":"pong"}')

    async def watch(self):
        """Heartbeats, access checked again, and catching up from the database when the channel layer is quiet or
        broken."""
        last_ping = last_access_check = last_renew = time.monotonic()
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            now = time.monotonic()
            if now - last_renew >= sockets.RENEW_SECONDS:
                last_renew = now
                await sync_to_async(sockets.socket_renew, thread_sensitive=False)(self.user_id, self.socket_id)
            if now - last_access_check >= ACCESS_RECHECK_SECONDS:
                last_access_check = now
                code = await database_sync_to_async(self.access_refused)()
                if code:
                    hub, self.hub = self.hub, None
                    await hub.leave(self)  # no batch reaches this socket from here on
                    await self.close(code=code)
                    return
            if now - last_ping >= HEARTBEAT_SECONDS:
                last_ping = now
                await self.send(text_data='{"t":"ping"}')
            if self.finished_sent:
                continue
            quiet = now - max(self.last_live, self.last_catch_up)
            if not self.hub.joined or quiet >= self.catch_up_wait:
                found = await self.catch_up()
                self.last_catch_up = time.monotonic()
                self.catch_up_wait = CATCH_UP_AFTER_SECONDS if found else min(self.catch_up_wait * 2, CATCH_UP_MAX_SECONDS)

    async def catch_up(self):
        """Send what the database has and the socket has not. Returns whether there was anything."""
        run = await self.current_run()
        async with self.lock:
            before = self.last_sent
            await self.send_stored(up_to=None)
            if run.status in FINISHED_STATUSES:
                await self.send_status(await database_sync_to_async(status_message)(run), True)
            return self.last_sent != before or self.finished_sent

    # --- what the hub hands over ---

    async def offer_lines(self, event):
        """A live batch. The usual case (the next lines, nothing else going on) is sent at once; anything else (a gap to
        fill from the database, a backlog still being sent) runs as its own task, in order, behind the socket's lock."""
        self.last_live = time.monotonic()
        self.catch_up_wait = CATCH_UP_AFTER_SECONDS
        if event["last"] <= self.last_sent and not self.lock.locked():
            return
        if event["first"] == self.last_sent + 1 and not self.lock.locked():
            await self.send(text_data=event["json"])
            self.last_sent = event["last"]
            return
        asyncio.create_task(self.log_lines(event))

    async def log_lines(self, event):
        first, last = event["first"], event["last"]
        async with self.lock:
            if last <= self.last_sent:
                return  # already sent from the database
            if first > self.last_sent + 1:
                await self.send_stored(up_to=first - 1)  # a batch went missing in the channel layer: fill from the database
                if last <= self.last_sent:
                    return
            if first == self.last_sent + 1:  # forward the batch as the worker serialised it
                await self.send(text_data=event["json"])
                self.last_sent = last
                return
            message = json.loads(event["json"])
            skip = self.last_sent + 1 - first
            message["first"] = first + skip
            message["lines"] = message["lines"][skip:]
            message["times"] = message["times"][skip:]
            if "sections" in message:
                message["sections"] = [s for s in message["sections"] if s[0] >= first + skip]
            if "cut" in message:
                message["cut"] = [c for c in message["cut"] if c[0] >= first + skip]
            await self.send_message(message)

    async def apply_status(self, run, payload, stored_last):
        self.last_live = time.monotonic()
        async with self.lock:
            if run.is_finished and stored_last > self.last_sent:
                await self.send_stored(up_to=None)  # every line before the final status
            await self.send_status(payload, run.is_finished)

    # --- helpers ---

    async def send_message(self, message):
        if not message["lines"]:
            return
        await self.send(text_data=json.dumps(message, separators=(",", ":")))
        self.last_sent = message["first"] + len(message["lines"]) - 1

    async def send_stored(self, up_to):
        """Send stored lines after last_sent (up to `up_to`), a few chunks per database read. Holds self.lock."""
        stored_last = await database_sync_to_async(logsink.last_seq)(self.run) if up_to is None else up_to
        if stored_last - self.last_sent > BACKLOG_MAX_LINES:
            skip_to = stored_last - BACKLOG_MAX_LINES
            await self.send(text_data=json.dumps({"t": "skip", "from": self.last_sent + 1, "to": skip_to}))
            self.last_sent = skip_to
        while True:
            batch = await database_sync_to_async(self._read_chunks)(self.last_sent, up_to)
            if not batch:
                return
            for message in batch:
                await self.send_message(message)
            if up_to is not None and self.last_sent >= up_to:
                return

    def _read_chunks(self, after, up_to):
        before = None if up_to is None else up_to + 1
        out = []
        picked = list(itertools.islice(logsink.each_chunk(self.run, after=after, before=before,
                                                          page_chunks=BACKLOG_CHUNKS_PER_READ), BACKLOG_CHUNKS_PER_READ))
        if not picked:
            return out
        sections = list(logsink.sections(self.run, after=after, before=picked[-1].last_seq + 1))
        for chunk in picked:
            first, lines, times = logsink._slice(chunk, after, before)
            if lines:
                last = first + len(lines) - 1
                mine = [s for s in sections if first <= s.seq <= last]
                out.append(logsink.lines_message(first, lines, times, mine))
                after = last
        return out

    def access_refused(self):
        """The close code if the user may no longer watch the run (removed from its team, role changed, disabled, signed
        out, or the API token revoked or expired), else None: the same helper as on connect, with the user and their
        roles read afresh."""
        if self.scope.get("api_token_id") is not None:  # an API token's socket (portal/socketauth.py)
            user = socketauth.token_user_again(self.scope["api_token_id"])
            if user is None:  # revoked or expired since, or its user disabled
                return CLOSE_UNAUTHENTICATED
        else:
            # A fresh row, not scope["user"]: that is a lazy proxy holding the roles it read on connect.
            user = get_user_model().objects.filter(pk=self.scope["user"].pk).first()
            if user is None or not user.is_active:
                return CLOSE_UNAUTHENTICATED
            session = self.scope.get("session")
            key = getattr(session, "session_key", None)
            if key and not session.exists(key):  # signed out (in another tab), or the session expired
                return CLOSE_UNAUTHENTICATED
            if key:
                stored = session.__class__(session_key=key)  # as it is now, not as it was on connect
                if sessions.is_idle(stored) or not sessions.matches_password(stored, user):
                    return CLOSE_UNAUTHENTICATED  # idle too long, or the password was changed in another session
        try:
            get_run_for_user(user, self.run.pk)
        except Http404:
            return CLOSE_NOT_FOUND
        except PermissionDenied:
            return CLOSE_FORBIDDEN
        return None

    @database_sync_to_async
    def current_run(self):
        return Run.objects.select_related("team", "started_by").get(pk=self.run.pk)

    async def send_status(self, payload, finished):
        """Send a status message (JSON), unless the final one went out already. Holds self.lock."""
        if self.finished_sent:
            return
        await self.send(text_data=payload)
        if finished:
            self.finished_sent = True
