"""What a worker does with a rollout: the whole of `hosts.rollouts.tasks.rollout_run`, through the run executor.

The engine ticks: each tick reads the rollout and its host rows, collects what the hosts answered, and starts the next
steps the policy allows. Network work (SSH) runs in a thread pool; every database write happens in the engine's own
thread. Each step is written to its row *before* it acts (`download_started_at`, `reboot_sent_at`,
`rollback_sent_at`), so an engine that starts on a rollout whose worker died carries on from the rows: it re-reads a
host whose download may have finished, waits for a host whose reboot was sent (and never sends it again), and never
reboots a host twice.

Before its batch acts on a host, the pre-flight checks run (architecture, free space, the registry reachable); before a
major upgrade (a switch to another stream) the booted deployment is also pinned (`ostree admin pin`) and seen pinned
in the status, so it stays on the host as a fallback.

A host's steps: waiting → downloading (`bootc upgrade --download-only`, or `switch --download-only` to another
stream) → staged → rebooting (`bootc upgrade --from-downloaded --apply`, `--soft-reboot=auto` when the staged
deployment is softRebootCapable), only inside a maintenance window and within the disruption budget → soaking (booted
the target, greenboot's checks passed) → updated once it stayed up for the soak time. A host that boots anything else
failed: greenboot's own fallback is "rolled back", anything else "failed" and, by policy, rolled back with `bootc
rollback --apply`. A host that does not come back is failed "unreachable". A bootc too old for a step is never sent
its flag: before 1.12.0 the download happens in the window with the reboot (`upgrade --apply`); before 1.7.0 no soft
reboot; before 1.1.7 no `rollback --apply` (the host is left failed, with the reason). The version is read from the
fields the host's status has (bootc-reference.md §0). The commands each step sends, and how the host's answer moves
its row on, are in `hosts.rollouts.hoststeps`.

A rollout that can only wait (a soak time, a maintenance window, a pause) holds no worker: once a tick finds no job in
flight and nothing changed, and the next thing that can happen is more than ROLLOUTS_PARK_AFTER_SECONDS away, the
engine parks its run (`portal.runs.Execution.park`) and returns. A countdown task takes it up at that time (at most
ROLLOUTS_PARK_MAX_SECONDS later, to look again); beat's `rollouts_wake_due` does it too, should the countdown be lost,
and pause, resume and abort wake it at once. It carries on from the rows, as after a worker that died.
"""

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from hosts.connect import HostError, setting
from portal import runs
from portal import services as portal_services
from portal.models import AuditEvent

from . import jobs, services
from . import policy as rules
from .hoststeps import HostSteps, batch_name, capabilities
from .models import DONE_STEPS, FAILED_STEPS, Rollout, RolloutHost, RolloutStatus, Step, window_next_open, window_open


def rollout_execute(rollout_id, *, clock=timezone.now):
    """Execute a rollout's run, or take up a parked one (the task calls this). Returns the run, which is still running
    (parked) when the rollout waits."""
    rollout = Rollout.objects.select_related("run", "team", "stage").get(pk=rollout_id)
    run = rollout.run
    if not runs.claim(run, phase="starting"):
        return run
    with runs.executing(run, what="the rollout", stopped="hosts not started yet were left as they were",
                        before_finish=lambda execution: _release(rollout, execution)) as execution:
        execution.reason = Engine(rollout, execution, clock).run()
    return run


def _release(rollout, execution):
    """The run ends: the hosts are free for another rollout; a rollout the worker left mid-way stays resumable."""
    rollout.refresh_from_db()
    if not rollout.is_active:
        RolloutHost.objects.filter(rollout=rollout, active=True).update(active=False)


class Engine(HostSteps):
    """The loop and the rollout-level decisions: batches, halts, aborts, parking (each host's steps: HostSteps)."""

    def __init__(self, rollout, execution, clock):
        self.rollout = rollout
        self.policy = rollout.policy
        self.execution = execution
        self.sink = execution.sink
        self.clock = clock
        self.jobs = {}  # row id -> (kind, future)
        self.pool = None
        self.last_summary = ""

    # --- the loop ---

    def run(self):
        tick = setting("ROLLOUTS_TICK_SECONDS", 2.0)
        self.pool = ThreadPoolExecutor(max_workers=setting("ROLLOUTS_CONCURRENCY", 32), thread_name_prefix="rollout")
        if self.sink.next_seq > 1:
            self.sink.write(f"Rollout #{self.rollout.pk} carries on (taken up by {self.rollout.run.worker}).")
        else:
            self.sink.write(f"Rollout #{self.rollout.pk}: {self.rollout.reference} → {self.rollout.digest}")
        try:
            while True:
                rows = self._rows()
                before = self._progress(rows)
                self._collect(rows)
                rows = self._rows()
                self.rollout.refresh_from_db()
                run = self.rollout.run
                if not portal_services.run_heartbeat(run):
                    raise runs.Ended("its run is no longer running")
                status = self.rollout.status
                run.refresh_from_db(fields=["cancel_requested_at"])
                if run.cancel_requested_at and status in (RolloutStatus.RUNNING, RolloutStatus.PAUSED):
                    services.rollout_abort(rollout=self.rollout, user=None, rollback=False,
                                           note="its run was cancelled")
                    continue
                if status == RolloutStatus.ABORTING:
                    ended = self._abort(rows)
                elif status == RolloutStatus.RUNNING:
                    ended = self._advance(rows)
                elif status == RolloutStatus.PAUSED:
                    ended = None
                else:
                    ended = self._ended_reason()
                rows = self._rows()
                self._summarise(rows)
                if ended is not None and not self.jobs:
                    return ended
                if not self.jobs and self._progress(rows) == before and self._park(rows):
                    return ""
                self.sink.poll()
                time.sleep(tick)
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)

    # --- waiting with no worker ---

    def _progress(self, rows):
        """What a tick may change: the rollout's status and batch, and each host's step."""
        return (self.rollout.status, self.rollout.batch,
                tuple((row.pk, row.step, row.checked_at is not None, row.reboot_sent_at is not None) for row in rows))

    def _next_event(self, rows):
        """(when, what) the next thing this rollout waits for happens, with no job in flight: a soak time ending, a
        maintenance window opening, or, paused, the longest park; None when it is not a wait the engine knows."""
        now, rollout = timezone.now(), self.rollout
        if rollout.status == RolloutStatus.PAUSED:
            return now + timedelta(seconds=setting("ROLLOUTS_PARK_MAX_SECONDS", 1800)), "a resume"
        if rollout.status != RolloutStatus.RUNNING:
            return None
        batch = [row for row in rows if row.batch == rollout.batch]
        waits = [(self._soak_ends(row), "the soak time to end") for row in batch
                 if row.step == Step.SOAKING and row.back_at is not None]
        window_bound = any(row.step == Step.STAGED or (
            row.step == Step.WAITING and row.checked_at is not None
            and not capabilities(row.host.raw_status)["download"]) for row in batch)
        if window_bound:
            clock_now = self.clock()
            opens = window_next_open(self.policy.get("windows"), self.policy.get("window_timezone"), clock_now)
            if opens is not None and opens > clock_now:
                waits.append((now + (opens - clock_now), "the maintenance window to open"))
        return min(waits) if waits else None

    def _park(self, rows):
        """Park the run when all the rollout can do is wait long enough; True when it did (the engine returns)."""
        found = self._next_event(rows)
        if found is None:
            return False
        event, what = found
        now = timezone.now()
        if (event - now).total_seconds() < setting("ROLLOUTS_PARK_AFTER_SECONDS", 30):
            return False
        until = min(event, now + timedelta(seconds=setting("ROLLOUTS_PARK_MAX_SECONDS", 1800)))
        waiting = f"waiting for {what}" + (f" ({event:%Y-%m-%d %H:%M} UTC)" if what != "a resume" else "")
        rollout = self.rollout
        with transaction.atomic():
            # Under the row lock the controls take too: a pause, resume or abort either came first (and the tick
            # goes on) or comes after the run is parked (and wakes it).
            locked = Rollout.objects.select_for_update().get(pk=rollout.pk)
            if (locked.status, locked.batch) != (rollout.status, rollout.batch):
                return False
            self.sink.write(f"{waiting[0].upper()}{waiting[1:]}: the run is parked, no worker is held; it is taken up at "
                            f"{until:%Y-%m-%d %H:%M:%S} UTC.")
            self.execution.park(until=until, phase=waiting[:100])
            transaction.on_commit(lambda: services.rollout_wake(rollout, at=until))
        return True

    def _ended_reason(self):
        rollout = self.rollout
        if rollout.status == RolloutStatus.COMPLETED:
            return rollout.status_note
        if rollout.status == RolloutStatus.ABORTED:
            raise runs.Cancelled(rollout.status_note)
        raise runs.Failed(rollout.status_note or f"The rollout is {rollout.get_status_display().lower()}.")

    def _rows(self):
        return list(RolloutHost.objects.filter(rollout=self.rollout).select_related(
            "host", "host__team", "host__jump_host").order_by("batch", "position", "id"))

    # --- deciding ---

    def _advance(self, rows):
        rollout, now = self.rollout, self.clock()
        batch = [row for row in rows if row.batch == rollout.batch]
        total_failed = sum(1 for row in rows if row.step in FAILED_STEPS)
        stopping = bool(self.policy.get("max_failed_total")) and total_failed >= int(self.policy["max_failed_total"])
        busy = any(row.pk in self.jobs for row in batch)
        if stopping and not busy:
            # Enough hosts failed in all: hosts of this batch not rebooted yet stay as they are, and the batch ends.
            pending = [row for row in batch if row.step in (Step.WAITING, Step.STAGED)]
            RolloutHost.objects.filter(pk__in=[row.pk for row in pending]).update(
                step=Step.SKIPPED, reason="the rollout is halting", finished_at=timezone.now())
            for row in pending:
                row.step = Step.SKIPPED
        if all(row.step in DONE_STEPS for row in batch) and not busy:
            return self._batch_done(rows, batch)
        in_window = window_open(self.policy.get("windows"), self.policy.get("window_timezone"), now)
        downloading = _per_group(rows, (Step.DOWNLOADING,))
        updating = _per_group(rows, (Step.REBOOTING, Step.SOAKING, Step.ROLLING_BACK))
        for row in batch:
            if row.pk in self.jobs or row.step in DONE_STEPS:
                continue
            try:
                self._step(row, now=now, stopping=stopping, in_window=in_window, downloading=downloading,
                           updating=updating)
            except HostError as exc:  # e.g. the team has no SSH key: this host cannot be reached at all
                self._finish(row, Step.FAILED, f"unreachable: {exc}")
        return None

    def _step(self, row, *, now, stopping, in_window, downloading, updating):
        """Start the next step of one host of the current batch, if the policy allows it now."""
        caps = capabilities(row.host.raw_status)
        if row.step == Step.WAITING and not stopping:
            if self._matches(row.host.booted_digest, row.host):
                self._finish(row, Step.UPDATED, "already boots the target digest")
                return
            if row.checked_at is None:
                self._preflight(row)
                return
            if caps["download"]:
                if _room(downloading, row.group, self.policy.get("max_downloading_per_group")):
                    downloading[row.group] = downloading.get(row.group, 0) + 1
                    self._start_download(row)
            elif in_window and _room(updating, row.group, self.policy.get("max_updating_per_group")):
                updating[row.group] = updating.get(row.group, 0) + 1
                self._start_reboot(row, caps, download_too=True)
        elif row.step == Step.DOWNLOADING:
            self._submit(row, "recheck", jobs.job_read, self._target(row))  # resumed: did the download finish?
        elif row.step == Step.STAGED and not stopping:
            if in_window and _room(updating, row.group, self.policy.get("max_updating_per_group")):
                updating[row.group] = updating.get(row.group, 0) + 1
                self._start_reboot(row, caps)
        elif row.step in (Step.REBOOTING, Step.ROLLING_BACK):
            self._submit(row, "back" if row.step == Step.REBOOTING else "rolled_back", jobs.job_wait_back,
                         self._target(row), None)  # resumed: the command was sent; wait, never send it again
        elif row.step == Step.SOAKING and row.back_at is not None and timezone.now() >= self._soak_ends(row):
            self._submit(row, "verify", jobs.job_read, self._target(row))

    def _batch_done(self, rows, batch):
        rollout = self.rollout
        failed = sum(1 for row in batch if row.step in FAILED_STEPS)
        total_failed = sum(1 for row in rows if row.step in FAILED_STEPS)
        updated = sum(1 for row in batch if row.step == Step.UPDATED)
        name = batch_name(rollout.batch)
        reason = rules.halts(self.policy, batch_size=len(batch), batch_failed=failed, total_failed=total_failed)
        if reason:
            later = [row for row in rows if row.batch > rollout.batch]
            note = f"Halted after {name}: {reason}. No later batch starts ({len(later)} hosts left as they were)."
            with transaction.atomic():
                RolloutHost.objects.filter(pk__in=[row.pk for row in later]).update(
                    step=Step.SKIPPED, reason=f"the rollout halted after {name}", finished_at=timezone.now())
                self._set_status(RolloutStatus.HALTED, note, action="rollout.halt")
            self.sink.write(note)
            raise runs.Failed(note)
        last = max(row.batch for row in rows) if rows else 0
        self.sink.write(f"{name.capitalize()} done: {updated} updated, {failed} failed.")
        if rollout.batch >= last:
            note = f"{sum(1 for row in rows if row.step == Step.UPDATED)}/{len(rows)} hosts updated."
            with transaction.atomic():
                self._set_status(RolloutStatus.COMPLETED, f"Completed: {note}", action="rollout.complete")
            return f"Completed: {note}"
        with transaction.atomic():
            Rollout.objects.filter(pk=rollout.pk).update(batch=rollout.batch + 1)
            rollout.batch += 1
            portal_services.audit(
                action="rollout.batch", summary=f"rollout #{rollout.pk}: {name} done ({updated} updated, {failed} "
                f"failed); {batch_name(rollout.batch)} starts", team=rollout.team, obj=rollout, actor_name="portal",
                detail={"batch": rollout.batch, "updated": updated, "failed": failed})
        self.sink.write(f"{batch_name(rollout.batch).capitalize()} starts.")
        return None

    def _abort(self, rows):
        """Stop: nothing new starts; hosts not yet rebooted are skipped; with rollback, hosts on the new digest go
        back."""
        rollout = self.rollout
        if self.jobs:
            return None
        pending = [row for row in rows if row.step in (Step.WAITING, Step.DOWNLOADING, Step.STAGED)]
        if pending:
            RolloutHost.objects.filter(pk__in=[row.pk for row in pending]).update(
                step=Step.SKIPPED, reason="the rollout was aborted", finished_at=timezone.now())
        if rollout.abort_with_rollback:
            for row in rows:
                if row.step in (Step.UPDATED, Step.SOAKING) and row.rollback_sent_at is None:
                    self._start_rollback(row, capabilities(row.host.raw_status), why="the rollout was aborted")
            if self.jobs:
                return None
        rolled = sum(1 for row in self._rows() if row.step == Step.ROLLED_BACK)
        note = (f"Aborted{' by ' + self._who_aborted() if self._who_aborted() else ''}: {len(pending)} hosts skipped"
                + (f", {rolled} rolled back" if rollout.abort_with_rollback else "") + ".")
        with transaction.atomic():
            self._set_status(RolloutStatus.ABORTED, note, action="rollout.aborted")
        raise runs.Cancelled(note)

    def _who_aborted(self):
        event = AuditEvent.objects.filter(action="rollout.abort", object_type="rollouts.rollout",
                                          object_id=str(self.rollout.pk)).order_by("-seq").first()
        return event.actor_name if event else ""

    # --- helpers ---

    def _soak_ends(self, row):
        return row.back_at + timedelta(seconds=self.policy.get("soak_seconds") or 0)

    def _set_status(self, status, note, *, action):
        rollout = self.rollout
        Rollout.objects.filter(pk=rollout.pk).update(status=status, status_note=note[:2000], finished_at=timezone.now())
        rollout.status, rollout.status_note = status, note
        self._summarise(self._rows())
        portal_services.audit(action=action, summary=f"rollout #{rollout.pk} of {rollout.stage}: {note}"[:500],
                              team=rollout.team, obj=rollout, actor_name="portal", detail={"status": status})

    def _summarise(self, rows):
        text = summary(rows)
        if text != self.last_summary:
            self.last_summary = text
            portal_services.run_set_phase(self.rollout.run, text[:100])


def summary(rows):
    """One line: "7/10 updated · 2 staging · 1 rolled back" (rows: RolloutHost, or their steps)."""
    steps = [getattr(row, "step", row) for row in rows]
    count = {step: steps.count(step) for step in set(steps)}
    parts = [f"{count.get(Step.UPDATED, 0)}/{len(steps)} updated"]
    for label, which in (("staging", (Step.DOWNLOADING, Step.STAGED)), ("rebooting", (Step.REBOOTING,)),
                         ("soaking", (Step.SOAKING,)), ("rolling back", (Step.ROLLING_BACK,)),
                         ("rolled back", (Step.ROLLED_BACK,)), ("failed", (Step.FAILED,)),
                         ("skipped", (Step.SKIPPED,)), ("waiting", (Step.WAITING,))):
        n = sum(count.get(step, 0) for step in which)
        if n:
            parts.append(f"{n} {label}")
    return " · ".join(parts)


def _per_group(rows, steps):
    out = {}
    for row in rows:
        if row.step in steps:
            out[row.group] = out.get(row.group, 0) + 1
    return out


def _room(counts, group, limit):
    return limit in (None, "") or counts.get(group, 0) < int(limit)
