"""The poller: reading hosts over SSH and recording what they say.

`poll_hosts(ids)` polls many hosts at once (a thread pool does the network, this thread writes), and `record_outcome`
turns one answer into a snapshot, timeline events and the denormalised fields on `Host` (or marks the host unreachable,
"host key changed" or "status unreadable", keeping the raw output). Drift is judged by `hosts.drift`; connecting is
`hosts.connect`'s. Beat claims due hosts (`claim_due_hosts`) and hands them to poll tasks.
"""

import hashlib
import logging
import queue
import random
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from portal import services as portal_services
from portal import ssh
from portal.text import decoded, storable

from . import bootc, notifications, timeline
from .connect import HostError, keep_open, session_for, setting, target_for
from .drift import apply_expected, expected_by_reference
from .models import EventKind, Host, HostEvent, HostSnapshot, HostState, TeamSSHKey

log = logging.getLogger(__name__)

# How long after an action the polls attribute what they see to it.
ATTRIBUTION_WINDOW = timedelta(minutes=30)


# --- Polling ---------------------------------------------------------------------------------------------------------


@dataclass
class PollOutcome:
    host_id: int
    raw: bytes = b""
    truncated: bool = False
    exit_status: int | None = None
    stderr: str = ""
    error: ssh.SSHError | None = None
    seconds: float = 0.0
    status_hash: str = ""
    note: str = ""  # how the status was read, when not the usual way (a bootc too old for --format-version)


def read_status(target, host_id, *, timeout=None, command=None):
    """Network only (safe in a thread): connect, check, run `bootc status`, disconnect. A bootc that refuses
    --format-version is asked again with --format=json only, and the outcome says so."""
    started = time.monotonic()
    try:
        with session_for(target) as session:
            limits = {"timeout": timeout or setting("HOSTS_COMMAND_TIMEOUT", 30),
                      "max_output": setting("HOSTS_MAX_STATUS_BYTES", 1024 * 1024)}
            result = session.run(command or ssh.bootc_status(), **limits)
            if (command is None and not isinstance(result, ssh.SSHError) and result.exit_status
                    and bootc.refuses_format_version(result.error_text())):
                result = session.run(ssh.bootc_status_without_format_version(), **limits)
                outcome = _outcome(host_id, result, started)
                outcome.note = bootc.FORMAT_FALLBACK_NOTE
                return outcome
    except ssh.SSHError as exc:
        return PollOutcome(host_id, error=exc, seconds=time.monotonic() - started)
    except Exception as exc:  # noqa: BLE001 - one host's odd failure must not stop the others
        return PollOutcome(host_id, error=ssh.ProtocolError(f"{type(exc).__name__}: {exc}"),
                           seconds=time.monotonic() - started)
    return _outcome(host_id, result, started)


def _outcome(host_id, result, started):
    if isinstance(result, ssh.SSHError):
        return PollOutcome(host_id, error=result, seconds=time.monotonic() - started)
    return PollOutcome(host_id, raw=result.stdout, truncated=result.truncated, exit_status=result.exit_status,
                       stderr=result.error_text()[:2000], seconds=time.monotonic() - started)


def poll_hosts(host_ids, *, concurrency=None, action=None):
    """Poll hosts concurrently and record what they say. Returns {"ok": n, "changed": n, "failed": n}.

    Network work runs in a thread pool; database writes happen in this thread as results arrive. Hosts whose status did
    not change since the last poll cost one shared UPDATE per batch.
    """
    concurrency = concurrency or setting("HOSTS_POLL_CONCURRENCY", 64)
    # Only what reaching a host and spotting an unchanged answer take; hosts with something to record are loaded whole,
    # per batch (most hosts, most rounds, have nothing new to say).
    hosts = {h.pk: h for h in Host.objects.filter(pk__in=list(host_ids)).exclude(host_key="").select_related(
        "team", "jump_host").only(*ROUND_FIELDS)}
    if not hosts:
        return {"ok": 0, "changed": 0, "failed": 0}
    team_keys = {k.team_id: k for k in TeamSSHKey.objects.filter(team_id__in={h.team_id for h in hosts.values()})}
    expected = expected_by_reference({h.reference for h in hosts.values() if h.reference})
    counts = {"ok": 0, "changed": 0, "failed": 0}
    targets = {}
    for host in hosts.values():
        team_key = team_keys.get(host.team_id)
        if team_key is None:
            _record_failure(host, ssh.AuthenticationFailed(f"{host.team} has no SSH key yet."), timezone.now())
            counts["failed"] += 1
            continue
        targets[host.pk] = target_for(host, team_key)
    workers = max(1, min(concurrency, len(targets)))

    def write(outcomes):
        # One transaction per batch of answers (one commit, one WAL flush), a savepoint per host so that one host's
        # bad row cannot undo the others'.
        unchanged, written = [], []
        for outcome in outcomes:
            outcome.status_hash = hashlib.sha256(outcome.raw).hexdigest() if outcome.raw else ""
        _load_whole(hosts, [o.host_id for o in outcomes if action is not None or not _unchanged(hosts[o.host_id], o)])
        with transaction.atomic():
            for outcome in outcomes:
                host = hosts.pop(outcome.host_id)  # done with it after this: keeps the round's memory flat
                if action is None and _unchanged(host, outcome):
                    unchanged.append(host.pk)  # the steady state: no savepoint, no write of its own
                    counts["ok"] += 1
                    continue
                written.append(host)
                try:
                    with transaction.atomic():
                        kind = record_outcome(host, outcome, now=timezone.now(), expected=expected, action=action,
                                              defer_unchanged=True)
                except Exception:  # noqa: BLE001 - never let one host's bad row stop the round
                    log.exception("recording the poll of host %s failed", host.pk)
                    kind = "failed"
                if kind == "unchanged":
                    unchanged.append(host.pk)
                    kind = "ok"
                counts[kind] += 1
            _touch_unchanged(unchanged)
        for host in written:
            attach_journal(host)  # only hosts that just rolled back have anything to read

    if keep_open():
        from portal import sshpool  # heavy: asyncssh, loaded only by the processes that talk to hosts (see session_for)

        # One event loop reads every host over its kept-open connection; this thread writes as answers arrive.
        started = time.monotonic()
        results = sshpool.shared().run_many(targets, ssh.bootc_status(), timeout=setting("HOSTS_COMMAND_TIMEOUT", 30),
                                            max_output=setting("HOSTS_MAX_STATUS_BYTES", 1024 * 1024))
        answered, flushed_at, finished = [], time.monotonic(), False
        while not finished:
            try:
                item = results.get(timeout=WRITE_EVERY_SECONDS)
            except queue.Empty:
                item = ()
            if item is None:
                finished = True
            elif item:
                outcome = _outcome(item[0], item[1], started)
                if outcome.exit_status and bootc.refuses_format_version(outcome.stderr):
                    outcome = read_status(targets[item[0]], item[0])  # its own connection, with the fallback
                answered.append(outcome)
            due = time.monotonic() - flushed_at >= WRITE_EVERY_SECONDS
            if answered and (len(answered) >= WRITE_BATCH or due or finished):
                write(answered)
                answered, flushed_at = [], time.monotonic()
        return counts
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="poll") as pool:
        running = {pool.submit(read_status, target, pk) for pk, target in targets.items()}
        answered, flushed_at = [], time.monotonic()
        while running:
            done, running = wait(running, timeout=WRITE_EVERY_SECONDS, return_when=FIRST_COMPLETED)
            answered.extend(future.result() for future in done)
            due = time.monotonic() - flushed_at >= WRITE_EVERY_SECONDS
            if answered and (len(answered) >= WRITE_BATCH or due or not running):
                write(answered)
                answered, flushed_at = [], time.monotonic()
    return counts


ROUND_FIELDS = ("team__id", "team__name", "team__slug", "name", "address", "port", "ssh_user", "jump_host",
                "host_key", "status_hash", "state", "reachable", "failures", "tracked_image", "spec_image")


def _load_whole(hosts, host_ids):
    """Replace the light rows of hosts with something to record by whole ones (their last status included: the diff
    needs it), in one query."""
    if host_ids:
        hosts.update(Host.objects.filter(pk__in=host_ids).select_related("team", "jump_host").defer("raw_status")
                     .in_bulk())


# The poller writes answers in batches: at most this many hosts, or what arrived within this time.
WRITE_BATCH = 100
WRITE_EVERY_SECONDS = 0.25


def _next_poll(now, failures=0):
    interval = setting("HOSTS_POLL_SECONDS", 60)
    if failures:
        interval = min(interval * (2 ** min(failures, 10)), setting("HOSTS_MAX_BACKOFF_SECONDS", 3600))
    return now + timedelta(seconds=interval * random.uniform(0.9, 1.1))  # noqa: S311 - jitter, not crypto


def _touch_unchanged(host_ids):
    """Hosts that answered with the same status as before: one UPDATE for all of them."""
    if not host_ids:
        return
    now = timezone.now()
    interval = setting("HOSTS_POLL_SECONDS", 60)
    Host.objects.filter(pk__in=host_ids).update(last_poll_at=now, status_at=now,
                                                next_poll_at=now + timedelta(seconds=interval))


def record_outcome(host, outcome, *, now=None, expected=None, action=None, defer_unchanged=False):
    """Write what one poll found. Returns "unchanged" (only with defer_unchanged), "ok", "changed" or "failed"."""
    now = now or timezone.now()
    if outcome.error is not None:
        _record_failure(host, outcome.error, now, action=action)
        return "failed"
    raw = outcome.raw
    if outcome.exit_status not in (0, None) and not outcome.truncated:
        # stderr says why; stdout (if any) is kept raw, never parsed as the host's state.
        _record_unreadable(host, raw, error_text=bootc.failed_status_message(outcome.exit_status, outcome.stderr, raw),
                           now=now, action=action)
        return "changed"
    status_hash = outcome.status_hash or hashlib.sha256(raw).hexdigest()
    if action is None and _unchanged(host, outcome, status_hash):
        if defer_unchanged:
            return "unchanged"
        _touch_unchanged([host.pk])
        return "ok"
    text = raw.decode("utf-8", errors="replace")
    if outcome.truncated:
        _record_unreadable(host, raw, error_text=f"The output was cut off at {len(raw)} bytes (the portal reads at "
                                                 "most that much); it is not a status document.", now=now, action=action)
        return "changed"
    try:
        parsed = bootc.parse_status(text)
    except bootc.StatusUnreadable as exc:
        _record_unreadable(host, raw, error_text=str(exc), now=now, action=action)
        return "changed"
    if expected is None:
        expected = expected_by_reference({host.reference} | {parsed.spec_image.image if parsed.spec_image else ""})
    record_status(host, parsed, raw=text, status_hash=status_hash, now=now, expected=expected, action=action)
    if outcome.note:
        host.last_error, host.last_error_kind = outcome.note, "format"
        Host.objects.filter(pk=host.pk).update(last_error=outcome.note, last_error_kind="format")
    if not transaction.get_connection().in_atomic_block:
        attach_journal(host)
    return "changed"


def _unchanged(host, outcome, status_hash=None):
    """Whether a poll found what the host said last time, with nothing to record but the time (the common case)."""
    if outcome.error is not None or outcome.truncated or not outcome.raw:
        return False
    if not (host.reachable and host.failures == 0) or host.state in (
            HostState.UNREADABLE, HostState.HOST_KEY_CHANGED, HostState.AUTH_FAILED, HostState.UNREACHABLE,
            HostState.NEW):
        return False
    return (status_hash or outcome.status_hash or hashlib.sha256(outcome.raw).hexdigest()) == host.status_hash


def _effective_action(host, action, now):
    if action is not None:
        return action
    last = host.last_action
    if last is not None and (last.active or last.finished_at and now - last.finished_at <= ATTRIBUTION_WINDOW):
        return last
    return None


def record_status(host, parsed, *, raw, status_hash, now, expected, action=None):
    """A readable status that differs from the last one: snapshot, timeline events, denormalised fields."""
    with transaction.atomic():
        previous = host.status or None
        drifting_before = host.drifting
        was_unreachable = not host.reachable or host.state in (HostState.UNREACHABLE, HostState.AUTH_FAILED)
        effective = _effective_action(host, action, now)
        current = parsed.to_dict()
        specs = []
        if was_unreachable and host.status_at is not None:
            if host.reports_in:
                words = f"Reporting again, after {_duration(now - host.status_at)} without a report"
            else:
                words = "Reachable again" + (
                    f" after {host.failures} failed poll{'s' if host.failures != 1 else ''}" if host.failures else "")
            reachability_event(host, EventKind.REACHABLE, words, at=now,
                               detail={"offline_since": host.status_at.isoformat()})
        if status_hash != host.status_hash or previous is None:
            queued_by_operator = False
            if previous and previous.get("rollback_queued"):
                queued = HostEvent.objects.filter(host=host, kind=EventKind.ROLLBACK_QUEUED).only("automatic").first()
                queued_by_operator = queued is not None and not queued.automatic
            specs += timeline.diff(previous, current, action_kind=effective.kind if effective else None,
                                   rollback_queued_by_operator=queued_by_operator, rolled_back=host.rolled_back)
            HostSnapshot.objects.create(host=host, taken_at=now, raw=raw, parsed=current, status_hash=status_hash)
        explains = timeline.ACTION_EXPLAINS.get(effective.kind, set()) if effective else set()
        rows = []
        for spec in specs:
            attributed = effective if spec.kind in explains else None
            detail = dict(spec.detail)
            rows.append(HostEvent(host=host, at=now, kind=spec.kind, summary=spec.summary[:500], digest=spec.digest,
                                  version=spec.version[:200], previous_digest=spec.previous_digest,
                                  previous_version=spec.previous_version[:200], automatic=spec.automatic,
                                  action=attributed, user=attributed.requested_by if attributed else None, detail=detail))
        HostEvent.objects.bulk_create(rows)
        rollbacks = [row for row in rows if row.kind == EventKind.ROLLED_BACK]
        if rollbacks:
            # The journal is read after the transaction commits (attach_journal): no SSH while rows are locked.
            host._journal_for = [row.pk for row in rollbacks if row.pk] or [
                e.pk for e in HostEvent.objects.filter(host=host, kind=EventKind.ROLLED_BACK, at=now)]

        booted, staged, rollback = parsed.booted, parsed.staged, parsed.rollback
        kinds = {spec.kind for spec in specs}
        if EventKind.ROLLED_BACK in kinds:
            host.rolled_back = True
        elif EventKind.BOOTED in kinds or EventKind.SWITCHED in kinds:
            host.rolled_back = False
        host.is_bootc = parsed.is_bootc
        host.spec_image = (parsed.spec_image.image if parsed.spec_image else "")[:512]
        host.booted_digest = booted.digest[:80] if booted else ""
        host.booted_version = booted.version[:200] if booted else ""
        host.booted_image = (booted.image.image if booted and booted.image else "")[:512]
        host.booted_signature = (booted.image.signature if booted and booted.image else "")[:100]
        host.architecture = (booted.image.architecture if booted and booted.image else "")[:32]
        host.staged_digest = staged.digest[:80] if staged else ""
        host.staged_version = staged.version[:200] if staged else ""
        host.rollback_digest = rollback.digest[:80] if rollback else ""
        host.rollback_version = rollback.version[:200] if rollback else ""
        host.rollback_queued = parsed.rollback_queued
        update = booted.cached_update if booted and booted.update_available else None
        host.update_digest = update.digest[:80] if update else ""
        host.update_version = update.version[:200] if update else ""
        host.status = current
        host.status_hash = status_hash
        host.raw_status = raw[:1024 * 1024]
        host.status_at = now
        host.last_poll_at = now
        host.next_poll_at = _next_poll(now)
        host.reachable = True
        host.failures = 0
        host.last_error, host.last_error_kind = "", ""
        apply_expected(host, expected)
        host.save(update_fields=STATUS_FIELDS)
        notifications.notify_drift_started({host.pk: drifting_before}, [host])
        for row in rollbacks:
            notifications.notify(event=notifications.HostEventType.ROLLBACK, host=host, extra={
                "rollback": {"automatic": row.automatic, "summary": row.summary, "digest": row.digest or None,
                             "version": row.version or None, "previous_digest": row.previous_digest or None,
                             "previous_version": row.previous_version or None}})
    return host


STATUS_FIELDS = [
    "rolled_back", "is_bootc", "spec_image", "booted_digest", "booted_version", "booted_image", "booted_signature",
    "architecture", "staged_digest", "staged_version", "rollback_digest", "rollback_version", "rollback_queued",
    "update_digest", "update_version", "status", "status_hash", "raw_status", "status_at", "last_poll_at",
    "next_poll_at", "reachable", "failures", "last_error", "last_error_kind", "expected_digest", "drifting", "state",
]


def attach_journal(host):
    """Add the greenboot journal lines to the rollback events just recorded for `host` (best effort). Call outside any
    transaction: it talks to the host."""
    event_ids = getattr(host, "_journal_for", None)
    if not event_ids:
        return
    host._journal_for = None
    lines = _journal_evidence(host)
    if not lines:
        return
    for event in HostEvent.objects.filter(pk__in=event_ids):
        event.detail = {**event.detail, "journal": lines}
        event.save(update_fields=["detail"])


def _journal_evidence(host):
    """Journal lines of greenboot's checks and fallback, this boot and the one before."""
    if not setting("HOSTS_READ_JOURNAL", True) or host.reports_in:
        return []  # a host that reports in cannot be reached over SSH
    try:
        target = target_for(host)
        lines = []
        with session_for(target) as connection:
            for boot in (0, -1):
                for unit in ("greenboot-healthcheck.service", "greenboot-rpm-ostree-grub2-check-fallback.service"):
                    result = connection.run(ssh.journalctl(unit, boot=boot, lines=20), timeout=10, max_output=64 * 1024)
                    lines += [line for line in result.text().splitlines() if line and not line.startswith("-- No")]
        return lines[-40:]
    except (ssh.SSHError, HostError):
        return []


def _record_unreadable(host, raw, *, error_text, now, action=None):
    """The host answered with something that is not a status: it is marked unreadable (never left showing its last
    state as current), and what it printed is kept, as text and, when the text cannot be exact, as bytes."""
    status_hash = hashlib.sha256(raw).hexdigest()
    text = decoded(raw)
    error_text = storable(error_text)
    with transaction.atomic():
        if host.state != HostState.UNREADABLE or host.status_hash != status_hash:
            raw_bytes = raw[:1024 * 1024] if text.encode() != raw else b""
            HostSnapshot.objects.create(host=host, taken_at=now, raw=text[:1024 * 1024], raw_bytes=raw_bytes,
                                        parsed=None, error=error_text, status_hash=status_hash)
        if host.state != HostState.UNREADABLE:
            _event(host, EventKind.UNREADABLE, f"Status unreadable: {error_text}"[:500], at=now,
                   detail={"first_bytes": text[:500]})
        host.state = HostState.UNREADABLE
        host.raw_status = text[:1024 * 1024]
        host.status_hash = status_hash
        host.last_poll_at = now
        host.next_poll_at = _next_poll(now)
        host.reachable = True
        host.failures = 0
        host.last_error, host.last_error_kind = error_text[:2000], "unreadable"
        host.save(update_fields=["state", "raw_status", "status_hash", "last_poll_at", "next_poll_at", "reachable",
                                 "failures", "last_error", "last_error_kind"])


def _record_failure(host, error, now, action=None):
    with transaction.atomic():
        host.last_poll_at = now
        host.last_error, host.last_error_kind = storable(str(error))[:2000], error.kind
        if isinstance(error, ssh.HostKeyMismatch):
            new_offer = error.presented_key != host.offered_host_key
            if host.state != HostState.HOST_KEY_CHANGED or new_offer:
                _event(host, EventKind.HOST_KEY_CHANGED,
                       f"Host key changed: the host presented {ssh.fingerprint(error.presented_key)} instead of "
                       f"{host.host_key_fingerprint}. The portal refuses to connect until an admin confirms a key.",
                       at=now, detail={"presented": ssh.fingerprint(error.presented_key),
                                       "pinned": host.host_key_fingerprint})
                portal_services.audit(
                    action="hosts.host_key_changed", team=host.team, obj=host,
                    summary=f"{host} presented a different SSH host key ({ssh.fingerprint(error.presented_key)}); "
                            "connection refused, nothing sent",
                    detail={"presented": ssh.fingerprint(error.presented_key), "pinned": host.host_key_fingerprint},
                )
            host.state = HostState.HOST_KEY_CHANGED
            host.offered_host_key = error.presented_key
            host.offered_host_key_at = now
            host.next_poll_at = None  # nothing more until an admin decides
            host.failures += 1
            host.save(update_fields=["last_poll_at", "last_error", "last_error_kind", "state", "offered_host_key",
                                     "offered_host_key_at", "next_poll_at", "failures"])
            return
        became_unreachable = host.reachable
        if became_unreachable:
            reachability_event(host, EventKind.UNREACHABLE, f"Unreachable: {error}", at=now,
                               detail={"kind": error.kind})
        host.reachable = False
        host.failures += 1
        host.next_poll_at = _next_poll(now, host.failures)
        if host.state != HostState.HOST_KEY_CHANGED:
            host.state = HostState.AUTH_FAILED if isinstance(error, ssh.AuthenticationFailed) else HostState.UNREACHABLE
        host.save(update_fields=["last_poll_at", "last_error", "last_error_kind", "reachable", "failures",
                                 "next_poll_at", "state"])
        if became_unreachable:
            notifications.notify(event=notifications.HostEventType.UNREACHABLE, host=host, extra={
                "unreachable": {"error": host.last_error[:500], "error_kind": error.kind, "failures": host.failures}})


def reachability_event(host, kind, summary, *, at, detail=None):
    """A host went offline (UNREACHABLE) or came back (REACHABLE). A host flapping between the two makes one event,
    not hundreds: a change within HOSTS_FLAP_WINDOW_SECONDS of the host's latest event, when that event is a coming
    back or an earlier flap, updates that event (its kind, time and words, and the count of changes in
    detail["flaps"]) instead of adding one. So a plain outage shows as "offline" then "back", and a flapping host as
    those two and one more event that counts the rest."""
    window = timedelta(seconds=setting("HOSTS_FLAP_WINDOW_SECONDS", 3600))
    latest = HostEvent.objects.filter(host=host).order_by("-at", "-id").first()
    if (latest is not None and latest.kind in (EventKind.REACHABLE, EventKind.UNREACHABLE)
            and at - latest.at <= window and (latest.kind == EventKind.REACHABLE or latest.detail.get("flaps"))):
        flaps = latest.detail.get("flaps", 2) + 1  # a first coming back follows a going offline: two changes
        since = latest.detail.get("flapping_since") or latest.detail.get("offline_since") or latest.at.isoformat()
        latest.kind, latest.at = kind, at
        latest.summary = (f"{summary} (flapping: {flaps} changes between online and offline since "
                          f"{datetime.fromisoformat(since):%Y-%m-%d %H:%M} UTC)")[:500]
        latest.detail = {**latest.detail, **(detail or {}), "flaps": flaps, "flapping_since": since}
        latest.save(update_fields=["kind", "at", "summary", "detail"])
        return latest
    return _event(host, kind, summary, at=at, detail=detail)


def _duration(delta):
    minutes = int(delta.total_seconds() // 60)
    if minutes < 1:
        return "less than a minute"
    if minutes < 120:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{minutes // 60} hours"


def _event(host, kind, summary, *, at=None, user=None, action=None, detail=None, **fields):
    return HostEvent.objects.create(host=host, at=at or timezone.now(), kind=kind, summary=summary[:500],
                                    user=user if user is not None and getattr(user, "is_authenticated", False) else None,
                                    action=action, detail=detail or {}, **fields)


# --- Update checks (beat) -------------------------------------------------------------------------------------------


def check_updates(host_ids):
    """`bootc upgrade --check` on hosts (the registry's manifest and config only: nothing is downloaded or staged),
    then a poll that records what each found (its booted entry's cachedUpdate: "update available"). Returns
    {"checked": n, "failed": n}; hosts that did not answer are left to the regular polls."""
    hosts = list(Host.objects.filter(pk__in=list(host_ids), is_bootc=True).exclude(host_key="")
                 .exclude(state=HostState.HOST_KEY_CHANGED).select_related("team", "jump_host"))
    team_keys = {k.team_id: k for k in TeamSSHKey.objects.filter(team_id__in={h.team_id for h in hosts})}
    targets = {h.pk: target_for(h, team_keys[h.team_id]) for h in hosts if h.team_id in team_keys}
    command, timeout = ssh.bootc_upgrade(check=True), setting("HOSTS_UPDATE_CHECK_TIMEOUT", 120)
    checked = []
    if keep_open():
        from portal import sshpool  # heavy: asyncssh, loaded only by the processes that talk to hosts (see session_for)

        results = sshpool.shared().run_many(targets, command, timeout=timeout, max_output=64 * 1024)
        while (item := results.get()) is not None:
            if not isinstance(item[1], ssh.SSHError) and item[1].exit_status == 0:
                checked.append(item[0])
    else:
        def check(pk, target):
            try:
                with ssh.Connection(target) as connection:
                    return pk, connection.run(command, timeout=timeout, max_output=64 * 1024).exit_status == 0
            except ssh.SSHError:
                return pk, False

        with ThreadPoolExecutor(max_workers=max(1, min(setting("HOSTS_POLL_CONCURRENCY", 64), len(targets))),
                                thread_name_prefix="check") as pool:
            checked = [pk for pk, ok in pool.map(lambda item: check(*item), targets.items()) if ok]
    if checked:
        poll_hosts(checked)
    return {"checked": len(checked), "failed": len(targets) - len(checked)}


# --- Due polls (beat) ------------------------------------------------------------------------------------------------


def claim_due_hosts(*, limit=None, lease_seconds=None):
    """Host ids whose poll is due, claimed (next_poll_at pushed out) so an overlapping beat does not poll them twice."""
    now = timezone.now()
    lease = timedelta(seconds=lease_seconds or setting("HOSTS_POLL_LEASE_SECONDS", 300))
    ids = list(Host.objects.due(now).exclude(state=HostState.HOST_KEY_CHANGED).order_by("next_poll_at")
               .values_list("pk", flat=True)[: limit or setting("HOSTS_POLL_MAX_PER_ROUND", 20000)])
    claimed = []
    for i in range(0, len(ids), 1000):
        chunk = ids[i:i + 1000]
        Host.objects.filter(pk__in=chunk).filter(Q(next_poll_at__isnull=True) | Q(next_poll_at__lte=now)).update(
            next_poll_at=now + lease)
        claimed += chunk
    return claimed


def _enqueue_poll(host_ids):
    """Ask a worker to poll now. Best effort: beat polls every due host anyway, so a broker hiccup only delays it."""
    from .tasks import poll_hosts_task  # a cycle: hosts.tasks calls this module's polls

    try:
        poll_hosts_task.delay(list(host_ids))
    except Exception as exc:  # noqa: BLE001 - kombu raises several types; the next beat round covers it
        log.warning("could not queue a poll of %d host(s): %s", len(host_ids), exc)


def _enqueue_key_fetch(host_ids):
    """Fetch host keys in a worker (for an admin to confirm later). Best effort, like _enqueue_poll."""
    from .tasks import fetch_host_keys_task  # a cycle: hosts.tasks calls this module's polls

    try:
        fetch_host_keys_task.delay(list(host_ids))
    except Exception as exc:  # noqa: BLE001
        log.warning("could not queue fetching %d host key(s): %s", len(host_ids), exc)
