"""The one executor of long runs: builds, conversions, promotion applications and host actions all run through it.

A feature's task first claims its run (`claim`: a conditional UPDATE from queued to running, so a redelivered task
does nothing), then does its work inside `executing(run, ...)`. The executor gives the work the run's log sink and,
whatever stops the work, ends the run once, with a status and a reason people read:

| what stopped the work                      | status    | reason                                                     |
|--------------------------------------------|-----------|------------------------------------------------------------|
| nothing                                    | succeeded | what the work set as `execution.reason` (usually "")       |
| `Failed` (a cause the feature knows)       | failed    | the exception's message                                    |
| `Cancelled` (a cancel request was seen)    | cancelled | "Cancelled by <who>; <what was stopped> and the log ..."   |
| `TimedOut`, Celery's soft time limit       | failed    | "Timed out after <limit> (<where it is set>); ..."         |
| `ToolMissing` (a tool or builder unusable) | failed    | "<unavailable>: <why>."                                    |
| `Ended`, `RunStateError` (reaped under it) | failed    | "The run ended while it was working (...)."                |
| the worker shutting down (SystemExit, ...) | failed    | "The worker stopped while it was working (...)."           |
| anything else                              | failed    | "Internal error in <what>: <type>: <message>" (+ traceback) |
| the work parked (`Execution.park`)         | running   | none yet: the run waits with no worker until a task claims it |

The reasons are written here only, so runs of every kind that stop for the same cause say so the same way. The
reason is also the log's last line. The two kinds of failure that happen outside a worker end their runs elsewhere,
with reasons of their own: a broker that does not take the task (`portal.services.run_enqueue`, at once) and a worker
that died mid-run (`portal.services.reap_stale_runs`, once its heartbeat stops; the redelivered task then finds its run
no longer queued and does nothing). Either way no run stays running.

Features add what only they know through two hooks, both called in the transaction that ends the run:
`before_finish(execution)` (their own rows: a build's failed step, a host released) and `after_finish(execution)`,
called only when this worker was the one that ended the run (a notification that it failed). The executor does not
count a builder's capacity: the concurrency of the workers that consume a queue does.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction

from . import logcontext
from .logsink import LogSink
from .models import AuditEvent, Run, RunStatus
from .services import RunStateError, run_finish, run_park, run_start, run_unpark

log = logging.getLogger(__name__)


class Stop(Exception):
    """Why a run's work stopped before it was done, raised from inside `executing`: each subclass is one kind."""


class Failed(Stop):
    """The work failed for a cause the feature knows and has put into words: the message is the run's reason."""


class Cancelled(Stop):
    """Someone asked the run to stop, and the work saw the request."""


class TimedOut(Stop):
    """The run went past its time limit."""


class ToolMissing(Stop):
    """The tool the run needs, or the machine that runs it, cannot be used (not installed, unreachable, refused)."""


class Ended(Stop):
    """The run was ended under the worker: the reaper failed it, or something else finished it."""


@dataclass(frozen=True)
class Limit:
    """A run's time limit, and where people change it (named in the reason when the run times out)."""

    seconds: float
    source: str


@dataclass
class Execution:
    """One run being executed: its log sink, and, once the work stopped, its status and reason."""

    run: Run
    sink: LogSink
    stopped: str = ""  # what stopping early leaves behind, for the reason: "its processes were stopped"
    status: str = RunStatus.RUNNING
    reason: str = ""
    error: BaseException | None = None
    finished: bool = False  # whether this worker ended the run
    parked: bool = False  # the run waits with no worker (`park`): it did not end
    notes: list[str] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.status == RunStatus.SUCCEEDED

    def note(self, text: str) -> None:
        """Add a sentence to the reason of a run that stops early (what was undone on the way out)."""
        self.notes.append(text)

    def park(self, *, until, phase: str = "") -> None:
        """The work waits until `until` with no worker: the run stays running, parked (`run_park`), and the `with`
        block should return at once. Whoever takes it up again calls `claim` (the feature enqueues that task). Call it
        inside the transaction that checks nothing changed meanwhile."""
        run_park(self.run, until=until, phase=phase)
        self.parked = True

    def succeed(self, reason: str = "") -> None:
        """End the run as succeeded now, inside the caller's transaction, so the run succeeds together with the rows
        that record its result (or not at all, if that transaction rolls back)."""
        self.sink.close()
        run_finish(self.run, status=RunStatus.SUCCEEDED, reason=reason, log_lines=self.sink.last_seq)
        self.status, self.reason, self.finished = RunStatus.SUCCEEDED, reason, True


def queued(run_id: int, subject, *, task: str) -> Run | None:
    """The run of a task's `subject` (the row the task works on) when it is still queued; else None, logged: the row or
    run is gone, or the run already started or ended (a redelivered task)."""
    run = Run.objects.filter(pk=run_id).first()
    if subject is None or run is None or run.status != RunStatus.QUEUED:
        log.info("%s for run %s: nothing to do (%s)", task, run_id,
                 "no such run" if run is None else f"the run is {run.status}")
        return None
    return run


def claim(run: Run, *, phase: str = "") -> bool:
    """Start a queued run on this worker, or take up a parked one (`Execution.park`). False when it is neither: a
    redelivered task, a run cancelled or reaped before a worker took it (its reason is already on it), or a parked run
    another task took up first."""
    try:
        run_start(run, phase=phase)
    except RunStateError:
        try:
            run_unpark(run, phase=phase)
        except RunStateError:
            return False
    return True


@contextlib.contextmanager
def executing(run: Run, *, what: str, limit: Limit | None = None, stopped: str = "",
              unavailable: str = "This worker cannot run it",
              before_finish: Callable[[Execution], None] | None = None,
              after_finish: Callable[[Execution], None] | None = None) -> Iterator[Execution]:
    """Execute a claimed run's work in the `with` block and end the run, whatever happens in it (see the module's
    table). `what` names the work in an internal error ("the build pipeline"); `stopped` says what stopping early
    leaves behind; `unavailable` starts the reason of a `ToolMissing` ("Builder b1 is unavailable"). Exceptions are
    not raised on, except a worker's shutdown (SystemExit, KeyboardInterrupt), once the run has ended. The worker's
    log lines meanwhile carry the run's id (`portal.logcontext`), with the task's."""
    with logcontext.bound(run_id=run.pk):
        log.info("run %s (%s) started: %s", run.pk, run.kind, run.title)
        yield from _executing(run, what=what, limit=limit, stopped=stopped, unavailable=unavailable,
                              before_finish=before_finish, after_finish=after_finish)


def _executing(run, *, what, limit, stopped, unavailable, before_finish, after_finish):
    execution = Execution(run=run, sink=LogSink(run), stopped=stopped)
    raised = None
    try:
        yield execution
        if not execution.finished and not execution.parked:
            execution.status = RunStatus.SUCCEEDED
    except BaseException as exc:  # noqa: BLE001 - the run must end, whatever stopped the work
        raised = exc
        execution.error = exc
        # A success recorded in a transaction that then rolled back did not happen; one that committed makes the
        # finish below find the run ended already.
        execution.finished = execution.parked = False
        execution.status, execution.reason = stop_reason(exc, execution, what=what, limit=limit,
                                                         unavailable=unavailable)
        if execution.notes:
            execution.reason = " ".join([execution.reason, *execution.notes])
        if _unexpected(exc):
            log.exception("run %s (%s) failed unexpectedly", run.pk, what)
            execution.sink.write(traceback.format_exc())
        if not isinstance(exc, Ended | RunStateError):
            execution.sink.write(execution.reason)
    _end(execution, before_finish=before_finish, after_finish=after_finish)
    if execution.parked:
        log.info("run %s (%s) parked until %s", run.pk, run.kind, run.parked_until)
    else:
        log.info("run %s (%s) %s%s", run.pk, run.kind, execution.status,
                 f": {execution.reason}" if execution.reason else "")
    if raised is not None and not isinstance(raised, Exception):
        raise raised


def stop_reason(exc: BaseException, execution: Execution, *, what: str, limit: Limit | None,
                unavailable: str) -> tuple[str, str]:
    """(status, reason) for the exception that stopped a run's work."""
    stopped = execution.stopped
    if isinstance(exc, Failed):
        return RunStatus.FAILED, str(exc)
    if isinstance(exc, Cancelled):
        return RunStatus.CANCELLED, (f"Cancelled{_by_whom(execution.run)}; "
                                     + (f"{stopped} and the log up to then is kept." if stopped
                                        else "the log up to then is kept."))
    if isinstance(exc, TimedOut | SoftTimeLimitExceeded):
        if isinstance(exc, SoftTimeLimitExceeded) or limit is None:
            limit = Limit(settings.CELERY_TASK_SOFT_TIME_LIMIT, "the workers' CELERY_TASK_TIME_LIMIT, less a minute")
        return RunStatus.FAILED, f"Timed out after {limit_text(limit.seconds)} ({limit.source})" + (
            f"; {stopped}." if stopped else ".")
    if isinstance(exc, ToolMissing):
        return RunStatus.FAILED, f"{unavailable}: {exc}."
    if isinstance(exc, Ended | RunStateError):
        return RunStatus.FAILED, f"The run ended while it was working ({exc})."
    if not isinstance(exc, Exception):
        return RunStatus.FAILED, f"The worker stopped while it was working ({type(exc).__name__})."
    return RunStatus.FAILED, f"Internal error in {what}: {type(exc).__name__}: {exc}"


def limit_text(seconds: float) -> str:
    """A time limit as it was set: "1 min", "180 min", "90 s"."""
    seconds = int(seconds)
    return f"{seconds // 60} min" if seconds >= 60 and seconds % 60 == 0 else f"{seconds} s"


def _unexpected(exc: BaseException) -> bool:
    return isinstance(exc, Exception) and not isinstance(exc, Stop | RunStateError | SoftTimeLimitExceeded)


def _by_whom(run: Run) -> str:
    event = AuditEvent.objects.filter(action="run.cancel", object_type="portal.run", object_id=str(run.pk)).first()
    return f" by {event.actor_name}" if event and event.actor_name else ""


def _end(execution: Execution, *, before_finish, after_finish) -> None:
    """Close the log and end the run in one transaction with the feature's own rows. If that transaction fails, the
    run still ends, failed with the reason."""
    run = execution.run
    execution.sink.close()
    if execution.finished or execution.parked:
        return
    try:
        with transaction.atomic():
            if before_finish is not None:
                before_finish(execution)
            try:
                run_finish(run, status=execution.status, reason=execution.reason)
                execution.finished = True
            except RunStateError:
                pass  # reaped or cancelled meanwhile: whoever ended it wrote the reason
            if execution.finished and after_finish is not None:
                after_finish(execution)
    except Exception as exc:  # noqa: BLE001 - never leave the run running
        log.exception("run %s: recording its end failed", run.pk)
        execution.finished = False
        with contextlib.suppress(RunStateError):
            run_finish(run, status=RunStatus.FAILED, reason=f"Internal error while ending the run: "
                                                           f"{type(exc).__name__}: {exc}")
            execution.finished = True
