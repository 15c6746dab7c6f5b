"""The live log's hub: this web process's one member of a run's group, shared by every socket of the process that
watches the run (`portal.consumers.RunLogConsumer` is the socket).

One `RunHub` per web process and run is the group's member, however many sockets of the process watch the run, and it
does, once for all of them, everything that is the same for every socket: it receives each batch once, puts the lines
in order (dropping what it has, filling a gap from the database), keeps the newest lines in memory (its tail), reads
and renders each status change, catches up from the database while the channel layer is quiet, sends the heartbeats,
renews the sockets' leases and asks the access helper again for every socket, once per user and session. A socket
therefore costs the database nothing after it connects: its backlog comes from the hub's tail (or, for older lines,
from the database a few chunks at a time), its status from the hub's last one. (With a catch-up per socket, 250
sockets kept the one thread of `database_sync_to_async` busy, and handshakes waited past daphne's connect timeout.)
The hub renews its membership (Redis forgets every membership when it restarts).

The hub also keeps the process ahead of a fast log watched by many sockets. Under daphne it frames each batch once
and writes that frame to every live socket (`portal.wsbroadcast`: autobahn's prepared messages), instead of a send per
socket through Channels, daphne's reply path and autobahn's framing (elsewhere, and for backlogs and statuses, sends go
through Channels as before). Handing a batch to every socket still costs the process time in proportion to the
sockets, so after a round that kept it busy, the hub waits about as long again (at most HUB_HOLD_MAX_SECONDS) while batches
gather, and hands what gathered to each socket as one message (`logsink.merge_batch_messages`). A few sockets cost
microseconds a round, and their batches go out as they come; hundreds get fewer, larger messages, so the work per line
falls as the sockets grow instead of the process falling behind the log (bench/README.md, "logs").

The database is the source of truth; the channel layer only makes it fast. So while the run is active and no batch came
through the layer for a while, the hub reads new lines and the status from the database, one read per process and run
however many sockets watch it. Only the hub's main task hands lines to sockets, in order, so a catch-up and live
batches never interleave; each socket also drops anything at or below the last line it sent.
"""

import asyncio
import collections
import itertools
import json
import logging
import time

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.template.loader import render_to_string

from . import logsink, sockets, wsbroadcast
from .models import Run

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 20
WATCH_SECONDS = 2.0
# While the run is active, the hub reads the database when no batch came through the channel layer for this long;
# while it stays quiet, the wait doubles up to CATCH_UP_MAX_SECONDS. One read per process and run, not per socket.
CATCH_UP_AFTER_SECONDS = 4.0
CATCH_UP_MAX_SECONDS = 16.0
# The hub renews its group membership this often (it also expires in the channel layer after a day).
GROUP_RENEW_SECONDS = 10.0
# After a round of deliveries that kept the process busy for at least HUB_HOLD_AFTER_SECONDS, the hub lets batches
# gather for HUB_HOLD_FACTOR times as long, at most HUB_HOLD_MAX_SECONDS, before the next round.
HUB_HOLD_AFTER_SECONDS = 0.002
HUB_HOLD_FACTOR = 1.0
HUB_HOLD_MAX_SECONDS = 0.1
# An open socket's access is asked again this often: someone removed from the team (or disabled) stops receiving. A
# socket's access on connect is remembered for as long (per process, user and run), so a crowd of one user's sockets,
# or a reconnect, costs one check.
ACCESS_RECHECK_SECONDS = 60.0
CLOSE_UNAVAILABLE = 1011  # the run's hub could not start or stopped (the database or Redis): the viewer reconnects
# Stored lines are read a few chunks at a time, so memory stays bounded by the chunk size.
BACKLOG_CHUNKS_PER_READ = 4
# A (re)connecting client gets at most this many stored lines pushed; older ones are announced with "skip".
BACKLOG_MAX_LINES = 5000
# The hub's tail: the newest lines it handed out, kept for sockets that (re)connect, within both limits.
TAIL_MAX_LINES = BACKLOG_MAX_LINES
TAIL_MAX_BYTES = 4 * 1024 * 1024


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


def stored_batches(run, after, before=None):
    """Batch messages ({"type": "log.lines", "first", "last", "json"}) of the stored lines after `after` (and before
    `before`), from the first BACKLOG_CHUNKS_PER_READ chunks that hold any: call again after the last one for more."""
    out = []
    picked = list(itertools.islice(logsink.each_chunk(run, after=after, before=before,
                                                      page_chunks=BACKLOG_CHUNKS_PER_READ), BACKLOG_CHUNKS_PER_READ))
    if not picked:
        return out
    sections = list(logsink.sections(run, after=after, before=picked[-1].last_seq + 1))
    for chunk in picked:
        first, lines, times = logsink._slice(chunk, after, before)
        if lines:
            last = first + len(lines) - 1
            mine = [s for s in sections if first <= s.seq <= last]
            message = logsink.lines_message(first, lines, times, mine)
            out.append({"type": "log.lines", "run": run.pk, "first": first, "last": last,
                        "json": json.dumps(message, separators=(",", ":"))})
            after = last
    return out


def trimmed(batch, after):
    """The batch without its lines numbered up to `after` (it holds lines after `after`)."""
    if batch["first"] > after:
        return batch
    message = json.loads(batch["json"])
    skip = after + 1 - batch["first"]
    message["first"] = after + 1
    message["lines"] = message["lines"][skip:]
    message["times"] = message["times"][skip:]
    if "sections" in message:
        message["sections"] = [s for s in message["sections"] if s[0] > after]
    if "cut" in message:
        message["cut"] = [c for c in message["cut"] if c[0] > after]
    return {**batch, "first": after + 1, "json": json.dumps(message, separators=(",", ":"))}


def status_key(run):
    """What a status change is: a new status message is handed out when this differs (not when only the duration
    grew)."""
    return run.status, run.phase, run.exit_reason, run.is_finished


# Access on connect, remembered per (event loop, user, run) until it is due to be asked again: (until, the run). The
# consumer fills it; the hub forgets a socket's entry when the re-check refuses it.
remembered_access = {}


class RunHub:
    """This process's member of one run's group, and everything its sockets of the run share (see the module's
    docstring). Created by the first socket, gone with the last."""

    hubs = {}  # (event loop, group) -> hub

    def __init__(self, group, run_id):
        self.layer, self.group, self.run_id = get_channel_layer(), group, run_id
        self.key = (asyncio.get_running_loop(), group)
        self.members = set()  # every socket of the run here, also those still being sent their backlog
        self.live = set()  # the sockets that have every line up to self.delivered: live lines go to these
        self.channel = None
        self.joined = False
        self.last_renew = 0.0
        self.ready = asyncio.Event()
        self.inbox = []  # messages received and not yet handled, in order
        self.arrived = asyncio.Event()
        self.run = None
        self.last = 0  # the last line taken in, in order (every line up to it is in the tail or in the database)
        self.delivered = 0  # the last line handed to the live sockets
        self.tail = collections.deque()  # batches handed out, ending at self.delivered
        self.tail_lines = self.tail_bytes = 0
        self.status = None  # the last status message (JSON) and what it said
        self.status_key = None
        self.finished = False
        self.last_live = self.last_catch_up = time.monotonic()
        self.catch_up_wait = CATCH_UP_AFTER_SECONDS
        self.catch_up_asked = False
        self.task = asyncio.create_task(self.main())

    @classmethod
    async def enter(cls, socket):
        """The hub of the socket's run (joining the group first if it is new), with the socket among its members;
        None if the hub could not start."""
        key = (asyncio.get_running_loop(), socket.group)
        hub = cls.hubs.get(key)
        if hub is None or hub.task.done():
            hub = cls.hubs[key] = cls(socket.group, socket.run.pk)
        hub.members.add(socket)
        await hub.ready.wait()
        if hub.task.done():
            await hub.leave(socket)
            return None
        return hub

    async def leave(self, socket):
        """Take the socket out; the last one out stops the hub (and waits for it: the channel layer must not be left
        with a receive in progress)."""
        self.members.discard(socket)
        self.live.discard(socket)
        if self.members:
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
        except Exception as exc:  # noqa: BLE001 - the hub reads the database meanwhile
            if self.joined or not self.ready.is_set():
                log.warning("run %s: could not join %s (%s); reading the database until the channel layer is back",
                            self.run_id, self.group, exc)
            self.joined = False
        self.last_renew = time.monotonic()

    async def main(self):
        ticker = receiver = None
        try:
            self.channel = await self.layer.new_channel()
            await self.join()  # listening first, so no batch stored from here on is missed
            self.run, self.status, self.last = await database_sync_to_async(read_status)(self.run_id)
            self.status_key, self.finished = status_key(self.run), self.run.is_finished
            self.delivered = self.last
            self.ready.set()
            ticker = asyncio.create_task(self.tick_forever())
            receiver = asyncio.create_task(self.receive_forever())
            while True:
                await self.arrived.wait()
                if receiver.done():
                    receiver.result()  # the channel layer's error ends the hub; the next socket starts a new one
                self.arrived.clear()
                messages, self.inbox = self.inbox, []
                started = time.monotonic()
                await self.handle(messages)
                busy = time.monotonic() - started
                if busy >= HUB_HOLD_AFTER_SECONDS:
                    await asyncio.sleep(min(busy * HUB_HOLD_FACTOR, HUB_HOLD_MAX_SECONDS))
        except Exception:
            if not self.ready.is_set():
                log.exception("run %s: the log hub could not start", self.run_id)
            else:  # its sockets would hear nothing more: close them, and they reconnect to a new hub
                log.exception("run %s: the log hub stopped; closing its sockets, which reconnect", self.run_id)
                for socket in list(self.members):
                    asyncio.create_task(socket.close(code=CLOSE_UNAVAILABLE))
            raise
        finally:
            self.ready.set()
            if ticker:
                ticker.cancel()
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

    async def tick_forever(self):
        """Membership, catch-ups, heartbeats, leases and access, on a timer, for every socket of the run here."""
        now = time.monotonic()
        last_ping = last_lease = last_access = now
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            now = time.monotonic()
            if not self.joined or now - self.last_renew >= GROUP_RENEW_SECONDS:
                await self.join()
            quiet = now - max(self.last_live, self.last_catch_up)
            if not self.finished and not self.catch_up_asked and (not self.joined or quiet >= self.catch_up_wait):
                self.catch_up_asked = True
                self.inbox.append({"type": "hub.catch_up"})  # main() handles it in turn with the batches
                self.arrived.set()
            if now - last_ping >= HEARTBEAT_SECONDS:
                last_ping = now
                ping = wsbroadcast.prepare('{"t":"ping"}')
                for socket in list(self.live):
                    if socket.prepared_sender is not None:
                        socket.prepared_sender.send(ping)
                    else:
                        await socket.send_quietly('{"t":"ping"}')
            if now - last_lease >= sockets.RENEW_SECONDS:
                last_lease = now
                leases = [(s.user_id, s.socket_id) for s in self.members if s.socket_id]
                await sync_to_async(sockets.sockets_renew, thread_sensitive=False)(leases)
            if now - last_access >= ACCESS_RECHECK_SECONDS:
                last_access = now
                await self.recheck_access()

    async def recheck_access(self):
        """Ask the access helper again for every live socket, once per user and session (or token), in one database
        call; close those refused, after taking them out so that no further line reaches them."""
        watching = list(self.live)
        try:
            codes = await database_sync_to_async(access_codes)(watching)
        except Exception:  # noqa: BLE001 - asked again at the next re-check
            log.exception("run %s: could not check its viewers' access again", self.run_id)
            return
        for socket, code in zip(watching, codes, strict=True):
            if code:
                self.live.discard(socket)
                remembered_access.pop((self.key[0], socket.user_id, self.run_id), None)
                asyncio.create_task(socket.refuse(code))

    # --- lines and statuses, in order (only main() calls these) ---

    async def handle(self, messages):
        taken = []  # batches taken in and not yet handed out
        for message in messages:
            kind = message.get("type")
            if kind == "log.lines":
                taken += await self.take(message)
                continue
            await self.hand_out(taken)
            taken = []
            if kind == "run.status":
                self.last_live = time.monotonic()
                await self.refresh()
            elif kind == "hub.catch_up":
                self.catch_up_asked = False
                found = await self.refresh()
                self.last_catch_up = time.monotonic()
                self.catch_up_wait = (CATCH_UP_AFTER_SECONDS if found
                                      else min(self.catch_up_wait * 2, CATCH_UP_MAX_SECONDS))
        await self.hand_out(taken)

    async def take(self, batch):
        """The batches to hand out for one that came through the channel layer: none if it holds nothing new, the
        missing lines from the database first if it leaves a gap (the layer dropped a batch), trimmed if it overlaps."""
        if batch["last"] <= self.last:
            return []
        out = []
        if batch["first"] > self.last + 1:
            try:
                out = await self.read_stored(before=batch["first"])
            except Exception:  # noqa: BLE001 - the catch-up reads them when the database answers again
                log.exception("run %s: could not read lines %s-%s", self.run_id, self.last + 1, batch["first"] - 1)
                return out
            if batch["first"] > self.last + 1:
                log.warning("run %s: lines %s-%s are not stored; handing on the lines after them",
                            self.run_id, self.last + 1, batch["first"] - 1)
        self.last_live = time.monotonic()
        self.catch_up_wait = CATCH_UP_AFTER_SECONDS
        if batch["last"] > self.last:
            out.append(trimmed(batch, self.last))
            self.last = batch["last"]
        return out

    async def read_stored(self, before=None):
        """Stored lines after self.last (and before `before`), taken in: a few chunks per database read."""
        out = []
        while before is None or self.last + 1 < before:
            batches = await database_sync_to_async(stored_batches)(self.run, self.last, before)
            if not batches:
                break
            out += batches
            self.last = batches[-1]["last"]
        return out

    async def refresh(self):
        """Read the run's status and the lines stored after self.last, hand them out (lines first), and the status if
        it changed. Returns whether there was anything new."""
        try:
            run, payload, stored_last = await database_sync_to_async(read_status)(self.run_id)
            taken = await self.read_stored() if stored_last > self.last else []
        except Exception:  # noqa: BLE001 - the next catch-up reads them again
            log.exception("run %s: could not read its status", self.run_id)
            return False
        await self.hand_out(taken)
        changed = status_key(run) != self.status_key
        self.run, self.status, self.status_key, self.finished = run, payload, status_key(run), run.is_finished
        if changed:
            for socket in list(self.live):
                await socket.send_status(payload, run.is_finished)
        return bool(taken) or changed

    async def hand_out(self, batches):
        """Hand each batch to the live sockets: framed once for all of them under daphne (`portal.wsbroadcast`), each
        socket's frame written as it is; through Channels, one send per socket, anywhere else."""
        for batch in logsink.merge_batch_messages(batches):
            self.remember(batch)
            prepared = None
            for socket in list(self.live):
                sender = socket.prepared_sender
                if sender is not None and socket.last_sent < batch["first"]:
                    if prepared is None:
                        prepared = wsbroadcast.prepare(batch["json"])
                    socket.last_sent = batch["last"]
                    sender.send(prepared)  # a socket closing meanwhile gets nothing, as with a failed send
                else:
                    await socket.send_batch(batch)

    def remember(self, batch):
        self.tail.append(batch)
        self.delivered = batch["last"]
        self.tail_lines += batch["last"] - batch["first"] + 1
        self.tail_bytes += len(batch["json"])
        while len(self.tail) > 1 and (self.tail_lines > TAIL_MAX_LINES or self.tail_bytes > TAIL_MAX_BYTES):
            old = self.tail.popleft()
            self.tail_lines -= old["last"] - old["first"] + 1
            self.tail_bytes -= len(old["json"])

    # --- a socket joining ---

    def tail_after(self, seq):
        """The tail's batches with the lines after `seq`, or None if the tail does not reach back to seq + 1."""
        if not self.tail or self.tail[0]["first"] > seq + 1:
            return None
        return [batch for batch in self.tail if batch["last"] > seq]

    async def admit(self, socket, after):
        """Send the socket the lines after `after` (from the tail, older ones from the database), then the status, and
        make it live: from then on it gets each batch the hub hands out."""
        socket.last_sent = after
        if self.delivered - after > BACKLOG_MAX_LINES:
            skip_to = self.delivered - BACKLOG_MAX_LINES
            await socket.send(text_data=json.dumps({"t": "skip", "from": after + 1, "to": skip_to}))
            socket.last_sent = skip_to
        while True:
            while socket.last_sent < self.delivered:
                batches = self.tail_after(socket.last_sent)
                if batches is None:
                    before = self.tail[0]["first"] if self.tail else self.delivered + 1
                    batches = await database_sync_to_async(stored_batches)(self.run, socket.last_sent, before)
                    if not batches:  # not stored (see take()): go on from the tail
                        socket.last_sent = before - 1
                for batch in batches:
                    await socket.send_batch(batch)
            status = self.status
            await socket.send_status(status, self.finished)
            if socket.last_sent >= self.delivered and status is self.status and socket in self.members:
                self.live.add(socket)  # no await since the check: nothing was handed out in between
                return


def access_codes(watching):
    """Each socket's close code (None: still allowed), asking once per user and session (or token)."""
    codes = {}
    out = []
    for socket in watching:
        key = socket.access_key()
        if key not in codes:
            codes[key] = socket.access_refused()
        out.append(codes[key])
    return out
