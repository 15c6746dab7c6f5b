"""Kept-open SSH: one authenticated connection per host, reused for every command, each command a new channel.

A fresh connection per poll costs a key exchange and a login, 17-35 ms of CPU in OpenSSH and several ms in the portal;
for 10,000 hosts a minute that is more CPU than two cores have. A kept-open connection costs a channel per command
instead (a fraction of a millisecond). `portal.ssh` keeps the one-shot `Connection` (fetching a key for a person to
confirm, and the fresh-connection mode); this module keeps connections open, in one asyncio event loop (asyncssh),
because an idle asyncssh connection costs nothing while an idle paramiko transport is a thread that wakes ten times a
second (bench/README.md#fleet-at-scale).

What it guarantees, on top of `portal.ssh`'s (the same allow-listed `Command`s, deadlines, output cap and errors):
- **The strict host-key check on every (re)connection**: the key the server presents must be the pinned one before
  anything is sent; the pinned key is part of the pool's key for a host, so confirming a new key opens a new connection
  and the old one is closed when idle.
- **Bounded**: at most `max_connections` open (the least recently used idle one is closed to make room; file
  descriptors are raised to the hard limit at start), closed after `idle_seconds` unused, at most `sessions_per_host`
  commands at once on one host, at most `connects_in_flight` handshakes at once.
- **Reconnection with backoff**: after a failed connection attempt a host is retried no sooner than 1, 2, 4 ... up to
  `reconnect_max` seconds later (with jitter); a caller whose deadline allows it waits for that moment, others get the
  last error at once. A kept-open connection that turns out to be dead when a poll uses it is replaced once.

`shared()` is the process's pool, run in a background thread, with a blocking interface for Celery tasks: `run()` (one
command, its output streamed to a callback in the caller's thread) and `run_many()` (a command on many hosts, results as
they arrive).
"""

import asyncio
import contextlib
import functools
import logging
import os
import queue
import random
import resource
import shlex
import socket
import threading
import time
from dataclasses import dataclass

import asyncssh
from asyncssh.logging import SSHLogger
from asyncssh.packet import SSHPacketLogger
from django.conf import settings

from . import ssh

log = logging.getLogger(__name__)
logging.getLogger("asyncssh").setLevel(logging.WARNING)


def _quiet_packet_log():
    """asyncssh formats a log line for every packet, and for every channel opened and closed, before its logger checks
    whether that level is on: about a fifth of the pool's CPU per command, measured. Format only what will be logged."""
    format_and_log = SSHPacketLogger._log_packet
    if getattr(format_and_log, "quiet", False):
        return
    log_line = SSHLogger.log

    def _log_packet(self, msg, pkttype, pktid, packet, note):
        if SSHLogger._debug_level >= 3:
            format_and_log(self, msg, pkttype, pktid, packet, note)

    def log(self, level, msg, *args, **kwargs):
        if self._logger.isEnabledFor(level):
            log_line(self, level, msg, *args, **kwargs)

    _log_packet.quiet = True
    SSHPacketLogger._log_packet = _log_packet
    SSHLogger.log = log


_quiet_packet_log()

KEX_ALGS = ("curve25519-sha256", "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256", "diffie-hellman-group14-sha256")
ENCRYPTION_ALGS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr",
                   "chacha20-poly1305@openssh.com")
FD_RESERVE = 512  # file descriptors left for the database, Redis, logs and the worker itself


@dataclass(frozen=True)
class PoolLimits:
    max_connections: int = 15000
    idle_seconds: float = 300.0
    sessions_per_host: int = 4
    connects_in_flight: int = 64
    reconnect_base: float = 1.0
    reconnect_max: float = 30.0


def _identity(target):
    """What makes two targets the same connection: where, who, and the pinned key (and the jump host's)."""
    jump = _identity(target.jump) if target.jump is not None else None
    return (target.address, target.port, target.username, target.host_key, target.private_key_text, jump)


def _key_blob(line):
    return line.split()[1] if line and len(line.split()) > 1 else ""


class _Client(asyncssh.SSHClient):
    """Checks the presented host key against the pinned one (and remembers it, for the "host key changed" report)."""

    def __init__(self, entry, pinned):
        self.entry = entry
        self.pinned = pinned
        self.presented = ""

    def validate_host_public_key(self, host, addr, port, key):
        self.presented = " ".join(key.export_public_key("openssh").decode().split()[:2])
        return bool(self.pinned) and _key_blob(self.presented) == _key_blob(self.pinned)

    def connection_lost(self, exc):
        self.entry.lost(self)


class _Entry:
    """One host's place in the pool."""

    __slots__ = ("identity", "conn", "client", "connecting", "sessions", "last_used", "failures", "retry_at",
                 "last_error", "busy", "label")

    def __init__(self, identity, sessions_per_host, label):
        self.identity = identity
        self.conn = None
        self.client = None
        self.connecting = None
        self.sessions = asyncio.Semaphore(sessions_per_host)
        self.last_used = time.monotonic()
        self.failures = 0
        self.retry_at = 0.0
        self.last_error = None
        self.busy = 0
        self.label = label

    def lost(self, client):
        if client is self.client:
            self.conn, self.client = None, None

    @property
    def open(self):
        return self.conn is not None


class _Collect(asyncssh.SSHClientSession):
    """A command's output, capped, streamed to `on_output` as it arrives."""

    def __init__(self, max_output, on_output):
        self.max_output = max_output
        self.on_output = on_output
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.truncated = False
        self.exit_status = None
        self.done = asyncio.get_running_loop().create_future()
        self.channel = None

    def connection_made(self, chan):
        self.channel = chan

    def data_received(self, data, datatype):
        (self.stderr if datatype == asyncssh.EXTENDED_DATA_STDERR else self.stdout).extend(data)
        if self.on_output:
            self.on_output(data)
        if len(self.stdout) + len(self.stderr) > self.max_output:
            self.truncated = True
            del self.stdout[self.max_output:]
            del self.stderr[max(self.max_output - len(self.stdout), 0):]
            self.channel.close()

    def exit_status_received(self, status):
        self.exit_status = status

    def exit_signal_received(self, signal, core_dumped, msg, lang):
        self.exit_status = -1

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(exc)


class Pool:
    """The kept-open connections of one process, in one event loop. Use its coroutines from that loop only."""

    def __init__(self, limits=PoolLimits()):
        self.limits = limits
        self.entries = {}
        self.connects = asyncio.Semaphore(limits.connects_in_flight)
        self.client_keys = {}
        self.counters = {"connects": 0, "connect_failures": 0, "commands": 0, "reused": 0, "evicted": 0,
                         "idle_closed": 0, "stale_retries": 0}
        self._janitor = None

    # --- connections ---

    def _entry(self, target):
        identity = _identity(target)
        entry = self.entries.get(identity)
        if entry is None:
            entry = self.entries[identity] = _Entry(identity, self.limits.sessions_per_host, target.label())
        entry.last_used = time.monotonic()
        return entry

    def _client_key(self, text):
        key = self.client_keys.get(text)
        if key is None:
            try:
                key = self.client_keys[text] = asyncssh.import_private_key(text)
            except (asyncssh.KeyImportError, ValueError):
                raise ssh.SSHError("The team's private key cannot be read.") from None
        return key

    async def connection(self, target, deadline):
        """The open connection to `target`, connecting (once, whoever asks) if there is none."""
        if not target.host_key:
            raise ssh.HostKeyUnknown(f"No host key is confirmed for {target.label()}: confirm its fingerprint first.")
        if self._janitor is None:
            self._janitor = asyncio.get_running_loop().create_task(self._close_idle_forever())
        entry = self._entry(target)
        while True:
            if entry.conn is not None:
                return entry, entry.conn
            if entry.connecting is None:
                wait = entry.retry_at - time.monotonic()
                if wait > 0:
                    if time.monotonic() + wait > deadline:
                        raise _again(entry.last_error, target)
                    await asyncio.sleep(wait)
                    continue
                entry.connecting = asyncio.get_running_loop().create_task(self._connect(target, entry))
            connecting = entry.connecting
            await asyncio.shield(connecting)  # raises the connection's error to every waiter
            if entry.conn is None:
                continue

    async def _connect(self, target, entry):
        try:
            async with self.connects:
                await self._make_room()
                conn, client = await self._open(target, entry)
            entry.conn, entry.client = conn, client
            entry.failures, entry.retry_at, entry.last_error = 0, 0.0, None
            self.counters["connects"] += 1
        except ssh.SSHError as exc:
            self.counters["connect_failures"] += 1
            entry.failures += 1
            if not isinstance(exc, ssh.HostKeyMismatch | ssh.AuthenticationFailed):
                pause = min(self.limits.reconnect_base * 2 ** (entry.failures - 1), self.limits.reconnect_max)
                entry.retry_at = time.monotonic() + pause * random.uniform(0.8, 1.2)  # noqa: S311 - jitter
            entry.last_error = exc
            raise
        finally:
            entry.connecting = None

    async def _open(self, target, entry):
        loop = asyncio.get_running_loop()
        tunnel = None
        if target.jump is not None:
            _, tunnel = await self.connection(target.jump, time.monotonic() + target.jump.connect_timeout
                                              + target.jump.handshake_timeout + target.jump.auth_timeout)
            sock = None
        else:
            sock = socket.socket(socket.AF_INET6 if ":" in target.address else socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                infos = await loop.getaddrinfo(target.address, target.port, type=socket.SOCK_STREAM)
                family, _, _, _, address = infos[0]
                if family != sock.family:
                    sock.close()
                    sock = socket.socket(family, socket.SOCK_STREAM)
                    sock.setblocking(False)
                await asyncio.wait_for(loop.sock_connect(sock, address), target.connect_timeout)
            except TimeoutError:
                sock.close()
                raise ssh.HostUnreachable(f"{target.label()} did not answer within {target.connect_timeout:g} s.") \
                    from None
            except OSError as exc:
                sock.close()
                raise ssh.HostUnreachable(f"{target.label()} is unreachable: {exc.strerror or exc}.") from None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pinned_type = ssh.key_type(target.host_key)
        host_key_algs = ["rsa-sha2-512", "rsa-sha2-256"] if pinned_type == "ssh-rsa" else [pinned_type]
        client = _Client(entry, target.host_key)
        client_keys = [self._client_key(target.private_key_text)] if target.private_key_text else []
        try:
            conn = await asyncio.wait_for(asyncssh.connect(
                target.address, target.port, sock=sock, tunnel=tunnel or (), config=None, client_factory=lambda: client,
                username=target.username, client_keys=client_keys, known_hosts=([], [], []),
                server_host_key_algs=host_key_algs, kex_algs=list(KEX_ALGS), encryption_algs=list(ENCRYPTION_ALGS),
                compression_algs=None, agent_path=None, password=None, kbdint_auth=False, gss_auth=False,
                host_based_auth=False, keepalive_interval=0, login_timeout=target.handshake_timeout + target.auth_timeout,
                x509_trusted_certs=None, ignore_encrypted=True,
            ), target.handshake_timeout + target.auth_timeout)
        except asyncssh.HostKeyNotVerifiable:
            presented = client.presented
            raise ssh.HostKeyMismatch(
                f"{target.label()} presented a different host key ({ssh.fingerprint(presented)}) from the confirmed one "
                f"({ssh.fingerprint(target.host_key)}). Nothing was sent to it.", presented_key=presented) from None
        except asyncssh.PermissionDenied:
            raise ssh.AuthenticationFailed(
                f"{target.label()} refused the team's key for user {target.username!r}: add the team's public key to "
                "that user's authorized_keys.") from None
        except TimeoutError:
            if sock is not None:
                sock.close()
            raise ssh.HostUnreachable(f"{target.label()} did not complete the SSH handshake within "
                                      f"{target.handshake_timeout + target.auth_timeout:g} s.") from None
        except (asyncssh.ConnectionLost, asyncssh.DisconnectError, ConnectionError, OSError, EOFError) as exc:
            raise ssh.HostUnreachable(f"{target.label()} closed the connection during the handshake: "
                                      f"{getattr(exc, 'reason', '') or exc}") from None
        except (asyncssh.Error, ValueError) as exc:
            raise ssh.ProtocolError(f"SSH handshake with {target.label()} failed: {exc}") from None
        return conn, client

    async def _make_room(self):
        """Close the least recently used idle connection when the pool is full."""
        open_entries = [e for e in self.entries.values() if e.conn is not None]
        if len(open_entries) < self.limits.max_connections:
            return
        idle = sorted((e for e in open_entries if not e.busy), key=lambda e: e.last_used)
        for entry in idle[: len(open_entries) - self.limits.max_connections + 1]:
            self._close(entry)
            self.counters["evicted"] += 1

    def _close(self, entry):
        conn, entry.conn, entry.client = entry.conn, None, None
        if conn is not None:
            conn.close()

    async def _close_idle_forever(self):
        while True:
            await asyncio.sleep(max(self.limits.idle_seconds / 4, 0.05))
            self.close_idle()

    def close_idle(self, now=None):
        """Close connections unused for `idle_seconds`, and forget hosts with nothing left to remember."""
        now = now or time.monotonic()
        for identity, entry in list(self.entries.items()):
            if entry.busy or entry.connecting is not None or now - entry.last_used < self.limits.idle_seconds:
                continue
            if entry.conn is not None:
                self._close(entry)
                self.counters["idle_closed"] += 1
            if entry.retry_at < now:
                del self.entries[identity]

    async def close_all(self):
        for entry in list(self.entries.values()):
            self._close(entry)
        self.entries.clear()
        if self._janitor is not None:
            self._janitor.cancel()
            self._janitor = None

    def stats(self):
        return {"open": sum(1 for e in self.entries.values() if e.conn is not None), "hosts": len(self.entries),
                **self.counters}

    # --- commands ---

    async def run(self, target, command, *, timeout=ssh.COMMAND_TIMEOUT, max_output=ssh.MAX_OUTPUT_BYTES,
                  on_output=None, retry_stale=True):
        """Run one allow-listed command on `target` over its kept-open connection; returns an `ssh.CommandResult`."""
        if not isinstance(command, ssh.Command):
            raise TypeError("Only allow-listed commands (portal.ssh.Command) can be run.")
        started = time.monotonic()
        connect_deadline = started + target.connect_timeout + target.handshake_timeout + target.auth_timeout
        line = _line(command, target.username)
        attempts = 2 if retry_stale else 1
        for attempt in range(attempts):
            kept_open = self._entry(target).conn is not None
            entry, conn = await self.connection(target, connect_deadline)
            # The command's time starts once its connection is up: a host whose handshake waited behind thousands of
            # others (`connects_in_flight` at a time, the first round of a large fleet) still gets all of it, and the
            # handshake has deadlines of its own.
            deadline = time.monotonic() + timeout
            reused = kept_open and attempt == 0
            if kept_open:
                self.counters["reused"] += 1
            entry.busy += 1
            session = channel = None
            try:
                async with entry.sessions, asyncio.timeout_at(_loop_deadline(deadline)):
                    entry.last_used = time.monotonic()
                    try:
                        channel, session = await conn.create_session(lambda: _Collect(max_output, on_output), line,
                                                                     encoding=None)
                    except (asyncssh.ChannelOpenError, asyncssh.ConnectionLost, asyncssh.DisconnectError, OSError,
                            EOFError) as exc:
                        if entry.conn is conn:
                            self._close(entry)
                        if reused and attempt + 1 < attempts:
                            self.counters["stale_retries"] += 1
                            continue
                        raise ssh.HostUnreachable(f"{target.label()} did not open a session: {exc}") from None
                    self.counters["commands"] += 1
                    lost = await asyncio.shield(session.done)
                    if lost is not None and not session.truncated:
                        if entry.conn is conn:
                            self._close(entry)
                        raise ssh.HostUnreachable(f"The connection to {target.label()} broke: {lost}")
            except TimeoutError:
                if channel is not None:
                    channel.close()
                raise ssh.CommandTimeout(f"`{_argv(command)}` on {target.label()} did not "
                                         f"{'finish' if channel is not None else 'start'} within {timeout:g} s.") \
                    from None
            finally:
                entry.busy -= 1
                entry.last_used = time.monotonic()
            exit_status = session.exit_status if session.exit_status is not None and not session.truncated else -1
            return ssh.CommandResult(command=_argv(command), exit_status=exit_status,
                                     stdout=bytes(session.stdout), stderr=bytes(session.stderr),
                                     truncated=session.truncated, seconds=time.monotonic() - started)
        raise ssh.HostUnreachable(f"{target.label()} did not open a session.")  # not reached: the loop returns or raises


@functools.lru_cache(maxsize=256)
def _line(command, username):
    return command.for_user(username)


@functools.lru_cache(maxsize=256)
def _argv(command):
    return shlex.join(command.argv)


def _loop_deadline(deadline):
    """A time.monotonic() deadline on the event loop's clock (the same clock, but say so)."""
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())


def _again(error, target):
    """The last connection error of a host in backoff, raised again (a fresh object: exceptions keep tracebacks)."""
    if error is None:
        return ssh.HostUnreachable(f"{target.label()} is unreachable; the portal retries shortly.")
    if isinstance(error, ssh.HostKeyMismatch):
        return ssh.HostKeyMismatch(str(error), presented_key=error.presented_key)
    return type(error)(str(error))


# --- The process's pool, for blocking callers ------------------------------------------------------------------------


class PoolThread:
    """A `Pool` in an event loop of its own thread, with blocking calls for the worker's threads."""

    def __init__(self, limits=PoolLimits()):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
        if soft != resource.RLIM_INFINITY:
            limits = PoolLimits(**{**limits.__dict__, "max_connections": max(1, min(limits.max_connections,
                                                                                      soft - FD_RESERVE))})
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.pool = None
        ready = threading.Event()

        def main():
            asyncio.set_event_loop(self.loop)
            self.pool = Pool(limits)
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, name="ssh-pool", daemon=True)
        self.thread.start()
        ready.wait()

    def call(self, coroutine, timeout=None):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def run(self, target, command, *, timeout=ssh.COMMAND_TIMEOUT, max_output=ssh.MAX_OUTPUT_BYTES, on_output=None,
            on_tick=None, retry_stale=True):
        """Run one command; `on_output(bytes)` and `on_tick()` (at least once a second) are called in this thread."""
        chunks = queue.SimpleQueue()
        future = asyncio.run_coroutine_threadsafe(
            self.pool.run(target, command, timeout=timeout, max_output=max_output,
                          on_output=chunks.put if on_output else None, retry_stale=retry_stale), self.loop)
        if on_output is None and on_tick is None:
            return future.result()
        while True:
            try:
                data = chunks.get(timeout=0.05 if future.done() else 1.0)
            except queue.Empty:
                data = None
            if data is not None and on_output:
                on_output(data)
            if on_tick:
                on_tick()
            if data is None and future.done():
                return future.result()

    def run_many(self, jobs, command, *, timeout=ssh.COMMAND_TIMEOUT, max_output=ssh.MAX_OUTPUT_BYTES):
        """Run `command` on many targets (`jobs`: {key: target}). Returns a queue that receives (key, CommandResult or
        SSHError) as each finishes, and None after the last."""
        results = queue.SimpleQueue()

        async def one(key, target):
            try:
                result = await self.pool.run(target, command, timeout=timeout, max_output=max_output)
            except ssh.SSHError as exc:
                result = exc
            except Exception as exc:  # noqa: BLE001 - one host's odd failure must not stop the others
                result = ssh.ProtocolError(f"{type(exc).__name__}: {exc}")
            results.put((key, result))

        async def every():
            await asyncio.gather(*(one(key, target) for key, target in jobs.items()))
            results.put(None)

        asyncio.run_coroutine_threadsafe(every(), self.loop)
        return results

    def stats(self):
        return self.call(_stats(self.pool), 10)

    def close_all(self):
        self.call(self.pool.close_all(), 30)

    def stop(self):
        with contextlib.suppress(Exception):
            self.close_all()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def _stats(pool):
    return pool.stats()


_shared = None
_shared_lock = threading.Lock()


def shared():
    """This process's pool (a new one after a fork: connections are never shared between processes)."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.pid != os.getpid():
            _shared = PoolThread(PoolLimits(
                max_connections=getattr(settings, "HOSTS_SSH_POOL_MAX", 15000),
                idle_seconds=getattr(settings, "HOSTS_SSH_IDLE_SECONDS", 300.0),
                sessions_per_host=getattr(settings, "HOSTS_SSH_SESSIONS_PER_HOST", 4),
                connects_in_flight=getattr(settings, "HOSTS_SSH_CONNECTS_IN_FLIGHT", 64),
                reconnect_base=getattr(settings, "HOSTS_SSH_RECONNECT_BASE_SECONDS", 1.0),
                reconnect_max=getattr(settings, "HOSTS_SSH_RECONNECT_MAX_SECONDS", 30.0),
            ))
        return _shared


def reset_shared():
    """Close every kept-open connection of this process and stop its pool; the next `shared()` starts a new one with
    the settings of that moment (tests; a worker shutting down)."""
    global _shared
    with _shared_lock:
        if _shared is not None and _shared.pid == os.getpid():
            _shared.stop()
        _shared = None


class Session:
    """Commands on one host over the process's pool, with `portal.ssh.Connection`'s interface (`run`, and a context
    manager that leaves the connection open for the next command)."""

    def __init__(self, target):
        self.target = target
        self.commands_sent = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def open(self):
        return self

    def close(self):
        pass

    def run(self, command, *, timeout=ssh.COMMAND_TIMEOUT, max_output=ssh.MAX_OUTPUT_BYTES, on_output=None,
            on_tick=None, retry_stale=True):
        result = shared().run(self.target, command, timeout=timeout, max_output=max_output, on_output=on_output,
                              on_tick=on_tick, retry_stale=retry_stale)
        self.commands_sent += 1
        return result
