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

The socket's lines and statuses come from its run's hub in this process (`portal.loghub.RunHub`: it receives each
batch once for every socket of the run, reads the database, sends the heartbeats and asks the access helper again).

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
import logging
import time
import uuid
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import Http404

from . import loghub, sessions, socketauth, sockets, wsbroadcast
from .access import get_run_for_user

log = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_BAD_REQUEST = 4400
CLOSE_TOO_MANY = 4429


class RunLogConsumer(AsyncWebsocketConsumer):
    # No channel of its own: the run's hub receives for every socket of the process.
    channel_layer_alias = "(none: RunHub receives for the sockets)"
    run = None
    group = None
    hub = None
    last_sent = 0
    finished_sent = False
    socket_id = None
    user_id = None
    prepared_sender = None  # under daphne: writes the hub's batches framed once for every socket (portal.wsbroadcast)

    async def connect(self):
        await self.accept()  # accept first, so the close code reaches the client
        self.prepared_sender = self.scope.get(wsbroadcast.SCOPE_KEY)
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
            self.run = await self.allowed_run(user, self.scope["url_route"]["kwargs"]["pk"])
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
        self.group = self.run.group_name()
        self.hub = await loghub.RunHub.enter(self)  # listening first, so no batch written from here on is missed
        if self.hub is None:
            await self.close(code=loghub.CLOSE_UNAVAILABLE)
            return
        await self.hub.admit(self, after)

    async def allowed_run(self, user, run_id):
        """The run if the user may watch it, asking the access helper at most once per ACCESS_RECHECK_SECONDS per user
        and run in this process (the promise an open socket has anyway); a refusal is never remembered."""
        key = (asyncio.get_running_loop(), user.pk, run_id)
        now = time.monotonic()
        known = loghub.remembered_access.get(key)
        if known and known[0] > now:
            return known[1]
        run = await database_sync_to_async(get_run_for_user)(user, run_id)
        if len(loghub.remembered_access) > 10_000:
            for stale in [k for k, (until, _run) in loghub.remembered_access.items() if until <= now]:
                del loghub.remembered_access[stale]
        loghub.remembered_access[key] = (now + loghub.ACCESS_RECHECK_SECONDS, run)
        return run

    async def disconnect(self, code):
        if self.hub:
            await self.hub.leave(self)
        if self.socket_id:
            socket_id, self.socket_id = self.socket_id, None
            await sync_to_async(sockets.socket_close, thread_sensitive=False)(self.user_id, socket_id)

    async def receive(self, text_data=None, bytes_data=None):
        """The client may only say "ping"; anything else is ignored."""
        if text_data == "ping":
            await self.send(text_data='{"t":"pong"}')

    async def refuse(self, code):
        """Closed out by the access re-check: out of the hub (the hub already hands it nothing), then closed."""
        hub, self.hub = self.hub, None
        if hub:
            await hub.leave(self)
        await self.close(code=code)

    # --- what the hub hands over ---

    async def send_batch(self, batch):
        """A batch of lines, trimmed to what this socket has not had yet."""
        if batch["last"] <= self.last_sent:
            return
        if batch["first"] <= self.last_sent:
            batch = loghub.trimmed(batch, self.last_sent)
        self.last_sent = batch["last"]
        await self.send_quietly(batch["json"])

    async def send_status(self, payload, finished):
        """Send a status message (JSON), unless the final one went out already."""
        if self.finished_sent or payload is None:
            return
        if finished:
            self.finished_sent = True
        await self.send_quietly(payload)

    async def send_quietly(self, text):
        try:
            await self.send(text_data=text)
        except Exception:  # noqa: BLE001 - one broken socket must not stop the hub handing lines to the others
            log.exception("run %s: could not send to a socket", self.run.pk if self.run else None)

    def access_key(self):
        """What the access re-check depends on: sockets with the same key get the same answer."""
        session = self.scope.get("session")
        return self.scope.get("api_token_id"), self.scope["user"].pk, getattr(session, "session_key", None)

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

