"""Data that does not grow forever: one retention pass, run by beat, applies every registered step and records what
each removed in a `RetentionRun` row (and one audit event).

The core's own steps: finished runs' logs older than LOG_ARCHIVE_AFTER_DAYS move to object storage
(`portal.logarchive`); webhook deliveries that ended more than WEBHOOK_DELIVERY_KEEP_DAYS ago are deleted; login
records (django-axes' failed attempts and successful logins) older than LOGIN_RECORD_KEEP_DAYS and expired sessions are
deleted. Features add theirs through `portal.registry.retention_step` (hosts thins its snapshots). The audit trail is
never pruned: its rows refuse deletion, and no step touches them.

Beat asks every hour (`retention_due`); a pass runs when the last one started RETENTION_EVERY_HOURS ago or more, so a
beat restart neither skips nor doubles a day. A step that fails is recorded with its error; the others still run.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.conf import settings
from django.contrib.sessions.models import Session
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from . import events, registry
from .models import DeliveryStatus, RetentionRun, RetentionStatus, WebhookDelivery
from .services import audit

log = logging.getLogger(__name__)

# A pass still marked running after this long died with its process: another may start.
STUCK_AFTER = timedelta(hours=6)


def policy() -> dict:
    """The settings a pass applies, recorded with it."""
    return {
        "LOG_ARCHIVE_AFTER_DAYS": settings.LOG_ARCHIVE_AFTER_DAYS,
        "HOST_SNAPSHOT_KEEP_DAYS": settings.HOST_SNAPSHOT_KEEP_DAYS,
        "WEBHOOK_DELIVERY_KEEP_DAYS": settings.WEBHOOK_DELIVERY_KEEP_DAYS,
        "LOGIN_RECORD_KEEP_DAYS": settings.LOGIN_RECORD_KEEP_DAYS,
        "EVENT_KEEP_DAYS": settings.EVENT_KEEP_DAYS,
    }


def retention_due(*, now=None) -> RetentionRun | None:
    """Beat's hourly call: run a pass if the last one started RETENTION_EVERY_HOURS ago or more (or never ran)."""
    now = now or timezone.now()
    last = RetentionRun.objects.exclude(status=RetentionStatus.SKIPPED).order_by("-started_at").first()
    if last is not None and now - last.started_at < timedelta(hours=settings.RETENTION_EVERY_HOURS):
        return None
    return retention_run(now=now)


def retention_run(*, now=None, trigger="schedule") -> RetentionRun:
    """One pass of every retention step. A pass while another runs is recorded as skipped and does nothing."""
    now = now or timezone.now()
    with transaction.atomic():
        running = RetentionRun.objects.select_for_update().filter(status=RetentionStatus.RUNNING,
                                                                  started_at__gte=now - STUCK_AFTER)
        busy = running.exists()
        record = RetentionRun.objects.create(started_at=now, trigger=trigger, policy=policy(),
                                             status=RetentionStatus.SKIPPED if busy else RetentionStatus.RUNNING,
                                             finished_at=now if busy else None)
    if busy:
        return record
    last = (RetentionRun.objects.filter(status__in=[RetentionStatus.SUCCEEDED, RetentionStatus.FAILED])
            .exclude(pk=record.pk).order_by("-started_at").values_list("started_at", flat=True).first())
    removed, errors = {}, {}
    for step in registry.retention_steps():
        try:
            removed[step.name] = {"label": step.label, **step.function(now=now, previous=last)}
        except Exception as exc:  # noqa: BLE001 - one step's failure is recorded; the others still run
            log.exception("retention step %s failed", step.name)
            errors[step.name] = f"{type(exc).__name__}: {exc}"[:1000]
    with transaction.atomic():
        RetentionRun.objects.filter(pk=record.pk).update(
            finished_at=timezone.now(), removed=removed, errors=errors,
            status=RetentionStatus.FAILED if errors else RetentionStatus.SUCCEEDED)
        record.refresh_from_db()
        parts = [f"{entry['count']:,} {entry['label']}" for entry in removed.values()]
        audit(action="retention.run", obj=record, actor_name="retention",
              summary=f"retention: {', '.join(parts) or 'no steps'}"
                      + (f"; failed: {', '.join(errors)}" if errors else ""),
              detail={"removed": {name: entry["count"] for name, entry in removed.items()}, "errors": errors,
                      "policy": record.policy})
        events.emit(type="retention.run", team=None, data={
            "status": record.status, "trigger": record.trigger,
            "started_at": record.started_at.isoformat(timespec="seconds"),
            "finished_at": record.finished_at.isoformat(timespec="seconds"),
            "removed": {name: int(entry["count"]) for name, entry in removed.items()}, "errors": errors,
        }, subject=events.Subject(kind="retention_run", id=record.pk, name=str(record),
                                  path=reverse("admin:portal_retentionrun_change", args=[record.pk])))
    return record


# --- The core's own steps --------------------------------------------------------------------------------------------


def prune_webhook_deliveries(*, now, previous=None) -> dict:
    """Deliveries that ended (delivered or given up) more than WEBHOOK_DELIVERY_KEEP_DAYS ago."""
    days = settings.WEBHOOK_DELIVERY_KEEP_DAYS
    if not days:
        return {"count": 0}
    old = WebhookDelivery.objects.filter(status__in=[DeliveryStatus.DELIVERED, DeliveryStatus.FAILED],
                                         created_at__lt=now - timedelta(days=days))
    return {"count": _deleted(old)}


def prune_login_records(*, now, previous=None) -> dict:
    """django-axes' records of failed attempts and of successful logins older than LOGIN_RECORD_KEEP_DAYS, and the
    sessions that expired (Django keeps those until someone clears them)."""
    days = settings.LOGIN_RECORD_KEEP_DAYS
    counts = {"attempts": 0, "failures": 0, "logins": 0}
    if days:
        cutoff = now - timedelta(days=days)
        counts["attempts"] = _deleted(AccessAttempt.objects.filter(attempt_time__lt=cutoff))
        counts["failures"] = _deleted(AccessFailureLog.objects.filter(attempt_time__lt=cutoff))
        counts["logins"] = _deleted(AccessLog.objects.filter(attempt_time__lt=cutoff))
    counts["expired_sessions"] = _deleted(Session.objects.filter(expire_date__lt=now))
    return {"count": sum(counts.values()), **counts}


def _deleted(queryset) -> int:
    """Delete and count the rows of the queryset's own model (not the rows that cascade with them)."""
    _, per_model = queryset.delete()
    return per_model.get(queryset.model._meta.label, 0)
