"""The suite's plain helpers, imported by name: where the repository and the team's shared material are, waiting,
free ports, threads that close their database connection, required tools (a skip on a laptop, a failure in CI), the
egress allow-list of a test's loopback servers, and a watcher of every process's command line."""

import os
import random
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def _shared_dir():
    """The team's shared material (docs and the real-world corpus) sits next to the repository; a clone elsewhere (CI)
    finds it through PORTAL_SHARED_DIR or at /work/shared."""
    candidates = [os.environ.get("PORTAL_SHARED_DIR", ""), ROOT.parent / "shared", "/work/shared"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "corpus").is_dir():
            return Path(candidate).resolve()
    return (ROOT.parent / "shared").resolve()


SHARED = _shared_dir()
CORPUS = SHARED / "corpus"
SHARED_DOCS = SHARED / "docs"
ARTIFACTS = ROOT / "test-artifacts"
IN_CI = os.environ.get("CI", "").lower() == "true"


def require_tool(*names):
    """Skip when a tool is missing on a laptop; fail in CI, where every tool must be installed."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        message = f"missing tool(s): {', '.join(missing)}; `scripts/system-deps.sh test` installs them"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_range(count):
    """A first port with `count` free ports from it on, below the kernel's ephemeral range (32768 and up here): a range
    found free inside it could be taken, before the test binds it, by any connection the suite opens (every outgoing
    connection gets a port from there), which once failed a fleet's start with "address already in use". Below it only
    an explicit bind takes a port; the first port is drawn at random, so the suite's processes rarely try the same."""
    for _ in range(50):
        first = random.randrange(20000, 32768 - count)  # noqa: S311 - a port to try, not a secret
        try:
            for port in range(first, first + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise AssertionError(f"no {count} free consecutive ports")


def start_in_thread(function, *args):
    """Start `function(*args)` in a thread of its own, as a worker would run it, closing that thread's database
    connection when it ends (so the test database can be flushed). Returns the started thread."""

    def run():
        try:
            function(*args)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_for(predicate, timeout=20.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class ProcessWatcher:
    """Reads every process's command line on the machine while something runs (`with ProcessWatcher() as w:`), so a
    test can show a secret never appeared in one: `/proc/PID/cmdline` is readable by every user."""

    def __init__(self):
        self.seen, self.stop = set(), threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as f:
                            self.seen.add(f.read().replace(b"\0", b" ").decode(errors="replace"))
                    except OSError:
                        pass
            time.sleep(0.01)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def allow_egress(*entries):
    """Add entries to EGRESS_ALLOW (portal.egress) for the loopback servers a test starts; returns a function that takes
    them out again. The tests' allow-list starts empty, like production's, and holds exactly what the running tests
    need; worker processes they start get the same list."""
    settings.EGRESS_ALLOW = [*settings.EGRESS_ALLOW, *entries]

    def undo():
        settings.EGRESS_ALLOW = [entry for entry in settings.EGRESS_ALLOW if entry not in entries]

    return undo
