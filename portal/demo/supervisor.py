"""The process supervisor behind `make run`: starts the portal's processes, says when they are all up, and stops them.

- Each process runs in a session of its own, so the terminal's Ctrl-C reaches only the supervisor, which then stops
  them in order: the portal's own processes first, the services they talk to (Redis, the registry) last.
- Output is printed with the process's name in front (honcho's printer), or appended to a log file for chatty
  processes; the last lines of each are kept either way.
- A process counts as started once its readiness check passes (web answers, the worker's heartbeat is in Redis, ...).
  `on_ready` runs once every process has started. A process that exits, or is not ready within the start-up deadline,
  is named with its last lines, everything else is stopped, and `run()` returns 1.
- Ctrl-C (SIGINT) or SIGTERM stops everything and `run()` returns 0: an interrupted `make run` is not an error.
  A second Ctrl-C kills what is left at once.
"""

import collections
import contextlib
import datetime
import os
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from honcho.colour import get_colours
from honcho.printer import Message, Printer

TAIL_LINES = 20
STOP_GRACE_SECONDS = 10.0


@dataclass
class Managed:
    name: str
    argv: list[str]
    ready: object = None  # a callable returning True once the process is up; None: up once spawned
    log_path: Path | None = None  # output goes to this file instead of the console
    service: bool = False  # a service the others use: stopped last
    env: dict | None = None  # instead of the supervisor's
    colour: str | None = None
    process: subprocess.Popen | None = None
    log: object = None
    started: bool = False
    returncode: int | None = None
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))


class Supervisor:
    def __init__(self, *, output, env, cwd, startup_timeout=180.0):
        self.env, self.cwd, self.startup_timeout = env, cwd, startup_timeout
        self.printer = Printer(output)
        self.output = output
        self.processes: dict[str, Managed] = {}
        self.events = queue.Queue()
        self.colours = get_colours()
        self.stopping = False
        self.kill_now = False
        self.signalled = None  # set by the signal handler, which must not take locks (the queue's) itself

    def add(self, name, argv, *, ready=None, log_path=None, service=False, env=None):
        self.processes[name] = Managed(name, [str(a) for a in argv], ready=ready, log_path=log_path, service=service,
                                       env=env, colour=next(self.colours))
        self.printer.width = max(self.printer.width, len(name), len("system"))

    # --- output ------------------------------------------------------------------------------------------------------

    def say(self, text, name="system", colour=None, at=None):
        self.printer.write(Message(type="line", data=text, time=at or datetime.datetime.now(), name=name, colour=colour))

    def _line(self, managed, timed_line):
        at, line = timed_line
        managed.tail.append(line)
        if managed.log is None:
            self.say(line, managed.name, managed.colour, at)
        else:
            managed.log.write(line + "\n")
            managed.log.flush()

    def _report_failure(self, managed, what):
        self.say(f"{managed.name} {what}. Its last lines"
                 + (f" (all of them in {managed.log_path})" if managed.log_path else "") + ":")
        for line in managed.tail or ["(no output)"]:
            self.say(f"    {line}")

    # --- processes ---------------------------------------------------------------------------------------------------

    def _spawn(self, managed):
        if managed.log_path is not None:
            managed.log = open(managed.log_path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115 - closed in stop()
        managed.process = subprocess.Popen(
            managed.argv, env=managed.env if managed.env is not None else self.env, cwd=self.cwd,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.say(f"{managed.name} started (pid={managed.process.pid})")
        threading.Thread(target=self._read, args=(managed,), name=f"read-{managed.name}", daemon=True).start()

    def _read(self, managed):
        for raw in iter(managed.process.stdout.readline, b""):
            self.events.put(("line", managed, (datetime.datetime.now(), raw.decode("utf-8", "replace").rstrip("\r\n"))))
        managed.process.stdout.close()
        self.events.put(("exit", managed, managed.process.wait()))

    def _on_signal(self, signum, frame):
        if self.stopping:
            self.kill_now = True
        self.signalled = signal.Signals(signum).name

    def run(self, on_ready=lambda: None):
        """Start everything, supervise until Ctrl-C or a failure, stop everything. 0 after Ctrl-C, 1 after a failure."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._supervise(on_ready)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _supervise(self, on_ready):
        for managed in self.processes.values():
            self._spawn(managed)
        threading.Thread(target=self._check_readiness, name="readiness", daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout
        all_started = False
        while True:
            try:
                kind, managed, data = self.events.get(timeout=0.2)
            except queue.Empty:
                kind = None
            if kind == "line":
                self._line(managed, data)
            elif kind == "exit":
                managed.returncode = data
                when = "during start-up" if not all_started else "unexpectedly"
                self._drain(managed)
                self._report_failure(managed, f"exited {when} (exit code {data})")
                self.stop()
                return 1
            if self.signalled:
                self.say(f"{self.signalled} received: stopping everything")
                self.stop()
                return 0
            if not all_started:
                all_started = all(m.started for m in self.processes.values())
                if all_started:
                    on_ready()
                elif time.monotonic() > deadline:
                    for managed in self.processes.values():
                        if not managed.started:
                            self._report_failure(managed, f"did not start within {self.startup_timeout:.0f} s")
                    self.stop()
                    return 1

    def _check_readiness(self):
        """In a thread of its own, so a slow check (a port that accepts but never answers) never holds up output."""
        while not self.stopping and not all(m.started for m in self.processes.values()):
            for managed in self.processes.values():
                if not managed.started and (managed.ready is None or _safely(managed.ready)):
                    managed.started = True
            time.sleep(0.5)

    def _drain(self, managed):
        """Take the lines an exited process printed that are still queued, so its last lines are complete."""
        pending = []
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            if event[0] == "line" and event[1] is managed:
                self._line(managed, event[2])
            else:
                pending.append(event)
        for event in pending:
            self.events.put(event)

    # --- stopping ----------------------------------------------------------------------------------------------------

    def stop(self):
        """SIGTERM the portal's processes, then the services; whatever is left after the grace period (or at a second
        Ctrl-C), including descendants that left the process group, is killed."""
        self.stopping = True
        portal = [m for m in self.processes.values() if not m.service]
        services = [m for m in self.processes.values() if m.service]
        for group in (portal, services):
            running = [m for m in group if m.process is not None and m.process.poll() is None]
            descendants = {pid for m in running for pid in _process_tree(m.process.pid)}
            for managed in running:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(managed.process.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while time.monotonic() < deadline and not self.kill_now and any(m.process.poll() is None for m in running):
                self._print_pending()
                time.sleep(0.1)
            for managed in running:
                if managed.process.poll() is None:
                    self.say(f"{managed.name} did not stop within {STOP_GRACE_SECONDS:.0f} s: killed")
                descendants |= set(_process_tree(managed.process.pid))
            for pid in descendants:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            for managed in running:
                managed.process.wait()
        self._print_pending()
        for managed in self.processes.values():
            if managed.log is not None:
                managed.log.close()
        self.say("everything stopped")

    def _print_pending(self):
        while True:
            try:
                kind, managed, data = self.events.get_nowait()
            except queue.Empty:
                return
            if kind == "line":
                self._line(managed, data)
            elif kind == "exit":
                managed.returncode = data


def _safely(check):
    try:
        return bool(check())
    except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
        return False


def _process_tree(root_pid):
    """The pid and its descendants (read from /proc), including those that started a session of their own."""
    children = collections.defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text(errors="replace").rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children[ppid].append(int(stat.parent.name))
    tree, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree
