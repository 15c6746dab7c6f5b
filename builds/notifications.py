"""What builds and promotions tell people: their events, composed here and delivered by the core's notifications
(`portal.notifications`: email and signed outbound webhooks; the kinds are registered in builds.apps).

`notify(event=..., team=..., promotion=... | build=...)` is the one entry point. Called inside a transaction, nothing is
sent for a change that rolled back. The builds pipeline calls `notify_build_failed(build=...)` when a build fails.
"""

from __future__ import annotations

from portal import notifications
from portal.models import Action, Team, User, WebhookDelivery
from portal.notifications import site_url

from .models import Build, NotificationEvent
from .releases.models import ApprovalDecision, Promotion, PromotionStatus

__all__ = ["NotificationEvent", "notify", "notify_build_failed"]


def notify(*, event: str, team: Team, promotion: Promotion | None = None, build: Build | None = None,
           actor: User | None = None) -> list[WebhookDelivery]:
    """Tell the right people (email) and the team's webhooks about `event`, after the transaction commits."""
    event = NotificationEvent(event)
    payload = _payload(promotion, build)
    subject, body = _email(event, payload)
    return notifications.send(event=event.value, team=team, payload=payload, actor=actor,
                              recipients=_recipients(event, team, promotion, build, actor), subject=subject, body=body)


def notify_build_failed(*, build: Build) -> list[WebhookDelivery]:
    """For the build pipeline: a build failed; tell its team (developers and up) and whoever started it."""
    return notify(event=NotificationEvent.BUILD_FAILED, team=build.definition.team, build=build)


def _recipients(event, team, promotion, build, actor) -> set[User]:
    from .releases.gate import eligible_approvers  # a cycle: releases notify through this module

    people: set[User] = set()
    if event == NotificationEvent.APPROVAL_REQUESTED:
        people.update(eligible_approvers(promotion))
    elif event in (NotificationEvent.DECIDED, NotificationEvent.APPLIED, NotificationEvent.FAILED):
        if promotion.requested_by is not None:
            people.add(promotion.requested_by)
        people.update(a.approver for a in promotion.approvals.filter(decision=ApprovalDecision.APPROVE,
                                                                     superseded_at__isnull=True).select_related("approver")
                      if a.approver is not None)
    elif event == NotificationEvent.BUILD_FAILED:
        people.update(notifications.members_with(team, Action.DEVELOP))
        if build.run.started_by is not None:
            people.add(build.run.started_by)
    if actor is not None and event != NotificationEvent.BUILD_FAILED:
        people.discard(actor)  # they know: they just did it
    return people


def _payload(promotion, build) -> dict:
    payload = {}
    if promotion is not None:
        decisions = promotion.approvals.filter(superseded_at__isnull=True).order_by("created_at")
        payload["promotion"] = {
            "id": promotion.pk,
            "url": site_url(promotion.get_absolute_url()),
            "kind": promotion.kind,
            "status": promotion.status,
            "status_note": promotion.status_note,
            "definition": str(promotion.definition),
            "repository": promotion.definition.repository,
            "digest": promotion.digest,
            "previous_digest": promotion.previous_digest,
            "stage": promotion.target_stage.name,
            "from_stage": promotion.source_stage.name if promotion.source_stage else None,
            "reference": promotion.target_ref,
            "reason": promotion.reason,
            "emergency": promotion.emergency,
            "requested_by": promotion.requested_by_name,
            "build": promotion.build.number,
            "decisions": [{"by": a.approver_name, "decision": a.decision, "comment": a.comment,
                           "at": a.created_at.isoformat(timespec="seconds")} for a in decisions],
        }
    if build is not None:
        run = build.run
        payload["build"] = {
            "id": build.pk,
            "number": build.number,
            "url": site_url(build.get_absolute_url()),
            "definition": str(build.definition),
            "revision": build.revision.number,
            "platform": build.platform,
            "status": run.status,
            "reason": run.exit_reason,
            "failed_step": build.failed_step,
            "started_by": run.started_by.username if run.started_by else None,
            "log": site_url(run.get_absolute_url()),
        }
    return payload


def _email(event, payload) -> tuple[str, str]:
    """The email's subject (the core adds the portal's prefix) and body."""
    if "promotion" in payload:
        p = payload["promotion"]
        what = f"{p['definition']} {p['digest'][:19]}… to {p['stage']}"
        kind = "rollback" if p["kind"] == "rollback" else "promotion"
        decided = "rejected" if p["status"] == PromotionStatus.REJECTED else "approved"
        subject = {
            NotificationEvent.APPROVAL_REQUESTED: f"Approval requested: {what}",
            NotificationEvent.DECIDED: f"{kind.capitalize()} {decided}: {what}",
            NotificationEvent.APPLIED: f"{kind.capitalize()} applied: {what}",
            NotificationEvent.FAILED: f"{kind.capitalize()} failed: {what}",
        }[event]
        lines = [
            subject, "",
            f"Requested by {p['requested_by']}: {p['reason']}",
            f"Image: {p['repository']}@{p['digest']}",
            f"Stage: {p['stage']} ({p['reference']})" + (f", now {p['previous_digest'][:19]}…" if p["previous_digest"] else ""),
        ]
        if p["emergency"]:
            lines.append("This is an emergency override: it applies during a freeze or outside change windows.")
        if p["status_note"]:
            lines.append(p["status_note"])
        for d in p["decisions"]:
            verb = "approved" if d["decision"] == ApprovalDecision.APPROVE else "rejected"
            lines.append(f"- {d['by']} {verb}" + (f": {d['comment']}" if d["comment"] else ""))
        action = "Review and decide" if event == NotificationEvent.APPROVAL_REQUESTED else "Open it"
        lines += ["", f"{action}: {p['url']}"]
        return subject, "\n".join(lines) + "\n"
    b = payload["build"]
    subject = f"Build failed: {b['definition']} build {b['number']} ({b['platform']})"
    lines = [subject, "", b["reason"] or "(no reason recorded)"]
    if b["failed_step"]:
        lines.append(f"At: {b['failed_step']}")
    lines += ["", f"Build: {b['url']}", f"Log: {b['log']}"]
    return subject, "\n".join(lines) + "\n"
