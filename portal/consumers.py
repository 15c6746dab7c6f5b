"""The live log of a run over a websocket.

Order of events on connect: check access (the run page's own helper), join the run's group, send the stored lines after
the client's `after`, then forward live batches, dropping lines already sent and filling any gap from the database. A
client that reconnects with `?after=<last seq it has>` resumes with no gap and no duplicate.

Messages to the browser (JSON):
  {"t": "lines", "first": N, "lines": [...], "times": [ms since epoch, ...]}
  {"t": "status", "status": "running", "phase": "...", "exit_reason": "...", ...}
  {"t": "ping"}                                         every HEARTBEAT_SECONDS
Close codes: 4401 not logged in, 4403 not allowed, 4404 no such run (or not visible), 4400 bad request.
"""

import asyncio
import json
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.core.exceptions import PermissionDenied
from django.http import Http404

from . import logsink
from .access import get_run_for_user
from .models import Run

HEARTBEAT_SECONDS = 20
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_BAD_REQUEST = 4400
# Stored lines are sent to a (re)connecting client in pages of at most this many chunks, so memory stays bounded.
BACKLOG_CHUNKS_PER_READ = 4


class RunLogConsumer(AsyncWebsocketConsumer):
    run = None
    group = None
    last_sent = 0
    heartbeat_task = None

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
        self.group = self.run.group_name()
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.last_sent = after
        await self.send_stored(up_to=None)
        await self.send_status(await self.current_status())
        self.heartbeat_task = asyncio.create_task(self.heartbeat())

    async def disconnect(self, code):
        if self.heartbeat_task:
            self.heartbeat_task.cancel()
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        """The client may only say "ping"; anything else is ignored."""
        if text_data == "ping":
            await self.send(text_data='{"t":"pong"}')

    async def heartbeat(self):
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            await self.send(text_data='{"t":"ping"}')

    # --- group messages ---

    async def log_lines(self, event):
        first, lines = event["first"], event["lines"]
        last = first + len(lines) - 1
        if last <= self.last_sent:
            return  # already sent from the database
        if first > self.last_sent + 1:
            await self.send_stored(up_to=first - 1)  # a batch went missing in the channel layer: fill from the database
        skip = self.last_sent + 1 - first
        if skip > 0:
            lines, times = lines[skip:], event["times"][skip:]
            first += skip
        else:
            times = event["times"]
        await self.send_lines(first, lines, times)

    async def run_status(self, event):
        if event.get("status") in ("succeeded", "failed", "cancelled"):
            await self.send_stored(up_to=None)  # every line before the final status
        await self.send_status(await self.current_status())

    # --- helpers ---

    async def send_lines(self, first, lines, times):
        if not lines:
            return
        await self.send(text_data=json.dumps({"t": "lines", "first": first, "lines": lines, "times": times}))
        self.last_sent = first + len(lines) - 1

    async def send_stored(self, up_to):
        """Send stored lines after last_sent (up to `up_to`), a few chunks per database read."""
        while True:
            batch = await database_sync_to_async(self._read_chunks)(self.last_sent, up_to)
            if not batch:
                return
            for message in batch:
                await self.send_lines(message["first"], message["lines"], message["times"])
            if up_to is not None and self.last_sent >= up_to:
                return

    def _read_chunks(self, after, up_to):
        out = []
        queryset = logsink.chunks(self.run, after=after, before=None if up_to is None else up_to + 1)
        for chunk in queryset[:BACKLOG_CHUNKS_PER_READ]:
            message = logsink.batch_message(chunk)
            skip = max(after + 1 - chunk.first_seq, 0)
            keep = len(message["lines"]) if up_to is None else max(up_to - chunk.first_seq + 1, 0)
            lines, times = message["lines"][skip:keep], message["times"][skip:keep]
            if lines:
                out.append({"first": chunk.first_seq + skip, "lines": lines, "times": times})
                after = chunk.first_seq + skip + len(lines) - 1
        return out

    @database_sync_to_async
    def current_status(self):
        run = Run.objects.get(pk=self.run.pk)
        return run

    async def send_status(self, run):
        duration = run.duration()
        await self.send(
            text_data=json.dumps(
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
                }
            )
        )
