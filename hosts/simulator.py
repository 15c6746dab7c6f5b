"""The simulated fleet: bootc hosts that speak real SSH, for demos, tests and benchmarks.

One asyncio event loop serves N hosts. Each host is a real SSH server (asyncssh) on its own loopback port with its own
host key, accepts the team's public key, and runs the portal's allow-listed commands against its bootc
(`hosts.simbootc`: the state machine that follows `bootc-reference.md`, with its bootc version, download-only updates,
soft reboots, greenboot's boot counter and their faults), which tracks tags of the real registry (`hosts.simregistry`).

SSH-level faults: `down` (connection refused), `hang` (accepts TCP, never speaks SSH), `slow` (seconds before each
command answers), `flood` (status prints megabytes), `garbage` (status prints broken JSON), `nul` (status holds a NUL:
`"byte"` a raw NUL byte, `"escaped"` a `\\u0000` in a JSON string), and `rotate_host_key()` (a reinstalled host, or a
man in the middle). A host that `never_come_back`s after a reboot stays down until that fault is cleared (then it
boots) or the simulator restarts.
"""

import asyncio
import base64
import contextlib
import hashlib
import logging
import shlex
import socket
import threading
from pathlib import Path

import asyncssh

from . import simruntime
from .simbootc import FAULTS, BootcMachine, CommandError, HostState

log = logging.getLogger(__name__)

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[:2]


class SimHost(BootcMachine):
    """One simulated bootc host: its state machine, its SSH listener and its faults."""

    def __init__(self, fleet, state):
        self.fleet = fleet
        self.state = state
        self.key = asyncssh.import_private_key(state.host_key)
        self.acceptor = None
        self.hang_server = None
        self.connections = set()
        self.faults = dict(FAULTS)
        self.rebooting = False
        self.commands = []  # every command line received, for tests (the MITM test counts them)
        self.logins = 0
        self.running = 0  # commands running now, and the most at once (the pool's per-host limit is tested by it)
        self.most_running = 0
        self._status_cache = None

    @property
    def name(self):
        return self.state.name

    @property
    def port(self):
        return self.state.port

    def public_host_key(self):
        """`type base64` of the current host key."""
        return " ".join(self.key.export_public_key("openssh").decode().split()[:2])

    # --- listening ---

    async def start(self):
        if self.faults["hang"]:
            await self._start_hang()
            return
        if self.faults["down"] or self.rebooting:
            return
        self.acceptor = await asyncssh.create_server(
            lambda: _Server(self), "127.0.0.1", self.state.port, server_host_keys=[self.key],
            process_factory=self._process, reuse_address=True, login_timeout=30,
            keepalive_interval=0, encoding=None,
        )
        if not self.state.port:
            self.state.port = self.acceptor.sockets[0].getsockname()[1]
            self.fleet.save(self)

    async def stop(self, *, drop_connections=True):
        if self.acceptor is not None:
            self.acceptor.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.acceptor.wait_closed(), 2)
            self.acceptor = None
        if self.hang_server is not None:
            self.hang_server.close()
            self.hang_server = None
        if drop_connections:
            for connection in list(self.connections):
                connection.abort()
            self.connections.clear()

    async def _start_hang(self):
        held = []

        async def hold(reader, writer):
            held.append(writer)  # accept TCP, say nothing: the client's handshake deadline must fire
            await asyncio.sleep(3600)

        self.hang_server = await asyncio.start_server(hold, "127.0.0.1", self.state.port, reuse_address=True)

    async def set_fault(self, name, value):
        self.faults[name] = value
        if name in ("down", "hang"):
            await self.stop()
            await self.start()
        if name == "never_come_back" and not value:
            self.power_on()

    async def rotate_host_key(self):
        self.key = asyncssh.generate_private_key("ssh-ed25519")
        self.state.host_key = self.key.export_private_key().decode()
        self.fleet.save(self)
        await self.stop()
        await self.start()

    # --- commands ---

    async def _process(self, process):
        line = process.command or ""
        self.commands.append(line)
        del self.commands[:-1000]
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self._answer(process, line)
        finally:
            self.running -= 1

    async def _answer(self, process, line):
        try:
            argv = shlex.split(line)
        except ValueError:
            argv = []
        if argv[:3] == ["sudo", "-n", "--"]:
            argv = argv[3:]
        try:
            if self.faults["slow"]:
                await asyncio.sleep(self.faults["slow"])
            out = await self.execute(argv)
            if out:
                process.stdout.write(out.encode() if isinstance(out, str) else out)
            process.exit(0)
        except CommandError as exc:
            process.stderr.write(f"{exc}\n".encode())
            process.exit(exc.status)
        except (asyncssh.Error, OSError, BrokenPipeError):
            pass
        except Exception as exc:  # noqa: BLE001 - a bug in the simulator must not kill the loop
            log.exception("simulated %s failed on %r", self.name, line)
            with contextlib.suppress(Exception):
                process.stderr.write(f"error: internal simulator error: {exc}\n".encode())
                process.exit(1)


class _Server(asyncssh.SSHServer):
    def __init__(self, host):
        self.host = host
        self.connection = None

    def connection_made(self, connection):
        self.connection = connection
        self.host.connections.add(connection)

    def connection_lost(self, exc):
        self.host.connections.discard(self.connection)

    def begin_auth(self, username):
        return True

    def password_auth_supported(self):
        return False

    def public_key_auth_supported(self):
        return True

    def validate_public_key(self, username, key):
        ok = username in self.host.fleet.users and key.public_data in self.host.fleet.authorized
        if ok:
            self.host.logins += 1
        return ok

    def connection_requested(self, dest_host, dest_port, orig_host, orig_port):
        # Acting as a jump host: forward to loopback only.
        return dest_host in ("127.0.0.1", "localhost")


# --- The fleet -------------------------------------------------------------------------------------------------------


class Fleet:
    """N simulated hosts in one event loop. `state_dir` keeps keys and state across restarts (None: in memory only)."""

    def __init__(self, *, authorized_keys=(), users=("root", "core"), state_dir=None, reboot_seconds=1.0):
        self.authorized = {asyncssh.import_public_key(line).public_data for line in authorized_keys}
        self.users = set(users)
        self.state_dir = Path(state_dir) if state_dir else None
        self.reboot_seconds = reboot_seconds
        self.hosts = {}
        self.loop = None
        self._thread = None

    def authorize(self, public_key_line):
        self.authorized.add(asyncssh.import_public_key(public_key_line).public_data)

    def save(self, host):
        if self.state_dir is not None:
            path = self.state_dir / f"{host.name}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(host.state.to_json())
            tmp.replace(path)

    def load_or_create(self, name, *, port=0, make_state=None):
        """The host `name`, from state_dir if it was saved before, else made by `make_state(HostState)`."""
        state = None
        if self.state_dir is not None and (self.state_dir / f"{name}.json").exists():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                state = HostState.from_json((self.state_dir / f"{name}.json").read_text())
        if state is None:
            state = HostState(name=name, port=port,
                              host_key=asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode())
            if make_state:
                make_state(state)
        host = SimHost(self, state)
        self.hosts[name] = host
        self.save(host)
        return host

    async def start_all(self, *, batch=200):
        hosts = list(self.hosts.values())
        for i in range(0, len(hosts), batch):
            await asyncio.gather(*(host.start() for host in hosts[i:i + batch]))

    async def stop_all(self):
        await asyncio.gather(*(host.stop() for host in self.hosts.values()), return_exceptions=True)

    # --- running in a background thread (tests, benchmarks) ---

    def start_in_thread(self):
        started = threading.Event()
        errors = []

        def main():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self.start_all())
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                errors.append(exc)
            started.set()
            if not errors:
                self.loop.run_forever()
            self.loop.run_until_complete(self.stop_all())
            self.loop.close()

        self._thread = threading.Thread(target=main, name="fleet-simulator", daemon=True)
        self._thread.start()
        started.wait(60)
        if errors:
            raise errors[0]
        return self

    def call(self, coroutine_function, *args, timeout=30):
        """Run a coroutine function in the fleet's loop from another thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine_function(*args), self.loop).result(timeout)

    def set_fault(self, name, fault, value=True):
        return self.call(self.hosts[name].set_fault, fault, value)

    def rotate_host_key(self, name):
        return self.call(self.hosts[name].rotate_host_key)

    def run(self, name, *argv):
        """What a person typing `argv` in a shell on the host would get printed (a CommandError if it fails)."""
        return self.call(self.hosts[name].execute, list(argv))

    def edit_etc(self, name, path, kind="M", text=None):
        """Someone edits (M), adds (A) or deletes (D) /etc/<path> on the host (`text`: what it holds now)."""
        async def edit():
            simruntime.edit_etc(self.hosts[name], path, kind, text)
        return self.call(edit)

    def stop_thread(self):
        if self.loop is not None and self._thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
            self._thread = None


def free_ports(count):
    """`count` distinct free loopback ports (held open together while choosing, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def demo_digest(text):
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def key_fingerprint(public_line):
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
