"""Where a build's commands run: the worker's own machine (a subprocess) or a remote builder over SSH (portal/ssh.py connects).

Both runners take argument lists (never shell strings: over SSH the list is quoted with `shlex.join`, the one safe way
to pass it through the remote shell), stream every output line into the run's `LogSink`, call `sink.poll()` from their
select loop (which also beats the run's heartbeat), check for a cancel request every BUILD_CANCEL_POLL_SECONDS, enforce
the build's deadline, and kill the whole process tree when either comes (SIGTERM, then SIGKILL 1.5 s later: well within
the 5 s a cancel may take). The partial log stays.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from portal import runs, ssh
from portal.logsink import LineSplitter
from portal.models import Run, RunStatus

KILL_GRACE_SECONDS = 1.5
# Lines kept for a failure's summary are cut to this many characters (the summary shows 500 of each).
TAIL_LINE_CHARS = 2000
SELECT_SECONDS = 0.1
SSH_CONNECT_SECONDS = 10


class RunnerError(Exception):
    """A command could not run, or failed. `reason` is what the build page shows."""


class BuilderUnavailable(RunnerError, runs.ToolMissing):
    """The builder cannot be reached or cannot run podman: the build fails fast."""


class CommandFailed(RunnerError):
    def __init__(self, argv, returncode, output_tail):
        self.argv, self.returncode, self.output_tail = argv, returncode, output_tail
        super().__init__(f"{Path(argv[0]).name} exited with status {returncode}")


class OutputTooLarge(CommandFailed):
    """A command whose output the portal keeps printed more than it keeps: it was stopped."""

    def __init__(self, argv, limit):
        super().__init__(argv, None, [])
        self.args = (f"{Path(argv[0]).name} printed more than {_size(limit)}, the most the portal keeps of a "
                     "command's output (RUNNER_CAPTURE_MAX_BYTES): it was stopped",)


def _size(count):
    return f"{count / 1024 / 1024:g} MiB" if count >= 1024 * 1024 else f"{count:,} bytes"


class Cancelled(RunnerError, runs.Cancelled):
    pass


class TimedOut(RunnerError, runs.TimedOut):
    pass


@dataclass
class Result:
    returncode: int
    stdout: str = ""
    lines: list[str] = field(default_factory=list)


class Watch:
    """What every runner checks while a command runs: cancel requests (polled cheaply), the deadline, the log's poll."""

    def __init__(self, *, run: Run | None, sink, deadline: float | None):
        self.run, self.sink, self.deadline = run, sink, deadline
        self._next_check = 0.0

    def poll(self):
        """Raise Cancelled or TimedOut when the command must stop (or runs.Ended when the run ended under it)."""
        if self.sink is not None:
            self.sink.poll()
        now = time.monotonic()
        if self.deadline is not None and now > self.deadline:
            raise TimedOut("the build ran past its time limit")
        if self.run is not None and now >= self._next_check:
            self._next_check = now + settings.BUILD_CANCEL_POLL_SECONDS
            row = Run.objects.filter(pk=self.run.pk).values_list("status", "cancel_requested_at").first()
            if row is None or row[1] is not None:
                raise Cancelled("cancel requested")
            if row[0] != RunStatus.RUNNING:
                raise runs.Ended(f"the run is {row[0]} already")

    def log(self, line):
        if self.sink is not None:
            self.sink.write(line)


class Collector:
    """What a runner keeps of one command's output: the log gets every line; captured stdout is kept up to
    RUNNER_CAPTURE_MAX_BYTES (beyond it the command is stopped); the last `tail` lines (each cut to TAIL_LINE_CHARS)
    are kept for the failure summary."""

    def __init__(self, *, argv, watch, capture, tail):
        self.argv, self.watch, self.capture, self.tail = argv, watch, capture, tail
        self.stdout: list[str] = []
        self.lines: list[str] = []
        self.captured = 0
        self.limit = settings.RUNNER_CAPTURE_MAX_BYTES

    def take(self, new, kind):
        for line in new:
            if kind == "out" and self.capture:
                self.captured += len(line) + 1
                if self.captured > self.limit:
                    raise OutputTooLarge(self.argv, self.limit)
                self.stdout.append(line)
                continue
            self.watch.log(line)
            self.lines.append(line[:TAIL_LINE_CHARS])
            if len(self.lines) > self.tail:
                del self.lines[0]


def display(argv):
    return "$ " + shlex.join(argv)


class Runner:
    """The interface the build pipeline uses."""

    name = "runner"

    def run(self, argv, *, watch: Watch, cwd=None, env=None, capture=False, echo=True, tail=40, shown=None) -> Result:
        """Run argv; its output goes to the log (stdout is returned instead when `capture`). The command itself is
        logged first, or `shown` in its place when the full line would only be noise."""
        raise NotImplementedError

    def mkdtemp(self) -> str:
        raise NotImplementedError

    def write_file(self, path: str, data: bytes, mode: int = 0o644):
        raise NotImplementedError

    def mkdir(self, path: str):
        raise NotImplementedError

    def read_file(self, path: str) -> bytes:
        raise NotImplementedError

    def remove_tree(self, path: str):
        raise NotImplementedError

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _set_parent_death_signal():
    """In the child: die with the worker (SIGKILLed workers must not leave podman running on its own)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def process_tree(root_pid: int) -> list[int]:
    """The pid and every descendant, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat_line = f.read().decode(errors="replace")
        except OSError:
            continue
        # Field 4 (ppid) comes after the command name in parentheses, which may itself hold spaces or parentheses.
        ppid = int(stat_line.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def kill_tree(root_pid: int, *, grace=KILL_GRACE_SECONDS):
    """SIGTERM the whole tree, then SIGKILL whatever is left (including children started meanwhile)."""
    seen = set(process_tree(root_pid))
    for pid in seen:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        alive = [pid for pid in seen if _alive(pid)]
        if not alive:
            return
        time.sleep(0.05)
    for pid in set(process_tree(root_pid)) | seen:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


# What the commands of a local builder keep of the worker's environment: where programs and podman's configuration are,
# the locale, and the proxies of an egress firewall. Never the portal's own settings (SECRET_KEY, FIELD_ENCRYPTION_KEYS,
# DATABASE_URL, ...): podman, git and what they start have no use for them.
KEPT_ENVIRONMENT = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME",
    "XDG_DATA_HOME", "SSL_CERT_FILE", "SSL_CERT_DIR", "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
})
KEPT_PREFIXES = ("LC_", "CONTAINERS_", "BUILDAH_", "STORAGE_")

# Run as `unshare --mount ... sh -c HIDE CWD PATH... -- ARGV...`: in a mount namespace of its own, cover each of the
# portal's directories with an empty read-only tmpfs (and each file with /dev/null), go to CWD, become the command.
HIDE_SCRIPT = r"""
cwd=$1; shift
while [ "$1" != "--" ]; do
  if [ -d "$1" ]; then mount -t tmpfs -o ro,nosuid,nodev,noexec,size=4k,mode=0 portal-hidden "$1" || exit 126
  elif [ -e "$1" ]; then mount --bind /dev/null "$1" || exit 126
  fi
  shift
done
shift
cd "$cwd" || exit 126
exec "$@"
"""


def command_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in KEPT_ENVIRONMENT or k.startswith(KEPT_PREFIXES)}


def hidden_paths() -> list[str]:
    """The portal's own files, which no command of a local builder may see: its code and .env (BASE_DIR), var/ (keys,
    the SQLite database, Redis's socket), MEDIA_ROOT (every team's disk images) and BUILD_HIDDEN_PATHS."""
    candidates = [settings.BASE_DIR, settings.VAR_DIR, settings.MEDIA_ROOT, *settings.BUILD_HIDDEN_PATHS]
    paths = sorted({os.path.realpath(str(p)) for p in candidates if str(p).strip()})
    return [p for p in paths if _inside(p, [q for q in paths if q != p]) is None]


def _inside(path: str, directories: list[str]) -> str | None:
    """The first of `directories` that holds `path` (or is it)."""
    real = os.path.realpath(path)
    for directory in directories:
        if real == directory or real.startswith(directory.rstrip("/") + "/"):
            return directory
    return None


def hiding(argv: list[str], hidden: list[str], cwd: str | None = None) -> list[str]:
    """argv run in a mount namespace of its own in which `hidden` are empty."""
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", HIDE_SCRIPT, "sh", cwd or "/",
            *hidden, "--", *argv]


class LocalRunner(Runner):
    """Commands on the worker's own machine, each in a mount namespace in which the portal's own files are hidden
    (`hidden_paths`), with an environment that holds none of the portal's settings.

    A mount namespace rather than a separate user: podman runs rootful here (bootc-image-builder needs root and
    --privileged anyway), and a namespace hides the files whatever their modes, including a .env or var/ that a
    deployment left world-readable. It needs the worker to run as root, as podman does.
    """

    name = "local"

    def __init__(self, *, work_dir: str = "", visible: tuple[str, ...] = ()):
        self.work_dir = work_dir or settings.BUILD_WORK_DIR or None
        self.hidden = hidden_paths()
        self.problem = ""
        if os.geteuid() != 0:
            self.problem = ("the worker does not run as root, so it cannot hide the portal's files from builds (a mount "
                            "namespace); run it as root, as rootful podman needs anyway, or use a remote builder")
        for path in (self.work_dir or tempfile.gettempdir(), *[v for v in visible if v]):
            hider = _inside(path, self.hidden)
            if hider:
                self.problem = (f"{path} is inside {hider}, which builds must not see: give the builder a work "
                                "directory and podman storage outside the portal's own files")

    def run(self, argv, *, watch, cwd=None, env=None, capture=False, echo=True, tail=40, shown=None):
        if self.problem:
            raise BuilderUnavailable(self.problem)
        environment = {**command_environment(), **(env or {})}
        if shutil.which(argv[0], path=environment.get("PATH")) is None:
            raise BuilderUnavailable(f"{argv[0]} is not installed on this builder")
        if echo:
            watch.log(shown or display(argv))
        try:
            process = subprocess.Popen(
                hiding(argv, self.hidden, cwd), env=environment, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                preexec_fn=_set_parent_death_signal,  # noqa: PLW1509
            )
        except FileNotFoundError:
            raise BuilderUnavailable("unshare (util-linux) is not installed on this builder") from None
        streams = {process.stdout.fileno(): ("out", LineSplitter()), process.stderr.fileno(): ("err", LineSplitter())}
        output = Collector(argv=argv, watch=watch, capture=capture, tail=tail)
        try:
            open_fds = set(streams)
            while open_fds:
                ready, _, _ = select.select(list(open_fds), [], [], SELECT_SECONDS)
                for fd in ready:
                    data = os.read(fd, 65536)
                    kind, splitter = streams[fd]
                    if not data:
                        open_fds.discard(fd)
                        new = splitter.rest()
                    else:
                        new = splitter.feed(data)
                    output.take(new, kind)
                watch.poll()
            while process.poll() is None:
                watch.poll()
                time.sleep(0.02)
        except BaseException:
            kill_tree(process.pid)
            process.wait()
            raise
        finally:
            process.stdout.close()
            process.stderr.close()
        if process.returncode != 0:
            raise CommandFailed(argv, process.returncode, output.lines)
        return Result(process.returncode, "\n".join(output.stdout), output.lines)

    def mkdtemp(self):
        if self.work_dir:
            Path(self.work_dir).mkdir(parents=True, exist_ok=True)
        return tempfile.mkdtemp(prefix="imp-build-", dir=self.work_dir)

    def write_file(self, path, data, mode=0o644):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(path, mode)

    def mkdir(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)

    def read_file(self, path):
        return Path(path).read_bytes()

    def remove_tree(self, path):
        shutil.rmtree(path, ignore_errors=True)


# The remote side: print our pid, go to the working directory, become the command (so the pid is the command's).
REMOTE_WRAPPER = 'echo "$$"; cd "$1" || exit 125; shift; exec "$@"'
# Kill a remote process tree: collect descendants with ps, SIGTERM them, then SIGKILL what is left.
REMOTE_KILL_TREE = r"""
tree() { echo "$1"; for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do tree "$c"; done; }
pids=$(tree "$1"); kill -TERM $pids 2>/dev/null; sleep 1.5; pids="$pids $(tree "$1")"; kill -KILL $pids 2>/dev/null; true
"""


class SSHRunner(Runner):
    """Commands on a remote builder over SSH, with its host key pinned."""

    name = "ssh"

    def __init__(self, *, host, port, username, private_key, host_key, work_dir=""):
        # The connection (pinned host key, key exchange, deadlines) is portal/ssh.py's, the one module that speaks
        # paramiko; a builder runs its commands on the connection's transport, without the hosts' command allow-list.
        self.host, self.port, self.username = host, port, username
        # The remote builder's temp dir: each build gets its own `mktemp -d` directory under it, mode 0700.
        self.work_dir = work_dir or "/tmp"  # nosec B108
        known_as = host if port == 22 else f"[{host}]:{port}"
        if not host_key.strip():
            raise BuilderUnavailable("the builder has no pinned host key: add it on the builders page")
        try:
            pinned = ssh.parse_public_key(host_key)
        except ValueError as exc:
            raise BuilderUnavailable(f"the builder's pinned host key cannot be read: {exc}") from None
        target = ssh.Target(address=host, port=port, username=username, host_key=pinned,
                            private_key=load_private_key(private_key), name=known_as,
                            connect_timeout=SSH_CONNECT_SECONDS, handshake_timeout=SSH_CONNECT_SECONDS,
                            auth_timeout=SSH_CONNECT_SECONDS)
        try:
            self.connection = ssh.Connection(target).open()
        except ssh.HostKeyMismatch:
            raise BuilderUnavailable(f"{known_as} answered with a host key other than the pinned one: refusing to "
                                     "build there (check the key on the builders page)") from None
        except ssh.AuthenticationFailed:
            raise BuilderUnavailable(f"{username}@{known_as} refused the builder's key (add its public key to that "
                                     "user's authorized_keys)") from None
        except ssh.SSHError as exc:
            raise BuilderUnavailable(f"cannot connect to {known_as}: {exc}") from None

    def _session(self):
        transport = self.connection.transport
        if transport is None or not transport.is_active():
            raise BuilderUnavailable(f"lost the connection to {self.host}")
        return transport.open_session()

    def run(self, argv, *, watch, cwd=None, env=None, capture=False, echo=True, tail=40, shown=None):
        if echo:
            watch.log(shown or display(argv))
        command = ["sh", "-c", REMOTE_WRAPPER, "sh", cwd or "."]
        if env:
            command += ["env", *[f"{k}={v}" for k, v in env.items()]]
        command += list(argv)
        channel = self._session()
        channel.exec_command(shlex.join(command))
        out, err = LineSplitter(), LineSplitter()
        output = Collector(argv=argv, watch=watch, capture=capture, tail=tail)
        pid = None
        try:
            while True:
                select.select([channel], [], [], SELECT_SECONDS)
                got = False
                while channel.recv_ready():
                    got = True
                    new = out.feed(channel.recv(65536))
                    if pid is None and new:
                        pid, new = new[0].strip(), new[1:]
                    output.take(new, "out")
                while channel.recv_stderr_ready():
                    got = True
                    output.take(err.feed(channel.recv_stderr(65536)), "err")
                if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
                if not got:
                    watch.poll()
            output.take(out.rest(), "out")
            output.take(err.rest(), "err")
            status = channel.recv_exit_status()
        except BaseException:
            if pid and pid.isdigit():
                self._kill(pid)
            channel.close()
            raise
        channel.close()
        if status != 0:
            raise CommandFailed(argv, status, output.lines)
        return Result(status, "\n".join(output.stdout), output.lines)

    def _kill(self, pid):
        with contextlib.suppress(Exception):
            self._exec(["sh", "-c", REMOTE_KILL_TREE, "sh", pid], timeout=10)

    def mkdtemp(self):
        result = self.run(["mktemp", "-d", "-p", self.work_dir, "imp-build.XXXXXX"],
                          watch=Watch(run=None, sink=None, deadline=None), capture=True, echo=False)
        return result.stdout.strip()

    def _exec(self, argv, *, stdin=b"", timeout=60):
        """A short command with input; returns stdout bytes. No SFTP needed on the builder."""
        channel = self._session()
        channel.settimeout(timeout)
        channel.exec_command(shlex.join(argv))
        if stdin:
            channel.sendall(stdin)
        channel.shutdown_write()
        out, err = [], []
        size, limit = 0, settings.RUNNER_CAPTURE_MAX_BYTES
        while True:
            data = channel.recv(65536)
            if not data:
                break
            size += len(data)
            if size > limit:
                channel.close()
                raise OutputTooLarge(argv, limit)
            out.append(data)
        while channel.recv_stderr_ready():
            err.append(channel.recv_stderr(65536))
        status = channel.recv_exit_status()
        channel.close()
        if status != 0:
            raise RunnerError(f"{argv[0]} on the builder failed ({status}): {b''.join(err).decode(errors='replace')[:300]}")
        return b"".join(out)

    def write_file(self, path, data, mode=0o644):
        self._exec(["sh", "-c", 'mkdir -p -- "$(dirname -- "$1")" && (umask 077; cat > "$1") && chmod "$2" -- "$1"', "sh",
                    path, format(mode, "o")], stdin=data)

    def mkdir(self, path):
        self._exec(["mkdir", "-p", "--", path])

    def read_file(self, path):
        return self._exec(["cat", "--", path])

    def remove_tree(self, path):
        if not path or path in ("/", "."):
            return
        with contextlib.suppress(Exception):
            self._exec(["rm", "-rf", "--", path], timeout=30)

    def close(self):
        self.connection.close()


def load_private_key(text: str):
    if not text or not text.strip():
        raise BuilderUnavailable("the builder has no SSH private key")
    try:
        return ssh.load_private_key(text)
    except ssh.SSHError:
        raise BuilderUnavailable("the builder's SSH private key cannot be read (an OpenSSH ed25519, ecdsa or rsa "
                                 "private key without a passphrase)") from None


def runner_for(builder) -> Runner:
    """A connected runner for the builder. Raises BuilderUnavailable when it cannot be reached."""
    if builder.kind == "ssh":
        return SSHRunner(host=builder.host, port=builder.port, username=builder.username,
                         private_key=builder.private_key, host_key=builder.host_key, work_dir=builder.work_dir)
    return LocalRunner(work_dir=builder.work_dir, visible=(builder.podman_root, builder.podman_runroot))
