"""What promotions tell people: their events (promotion.requested, .approved, .rejected, .applied, .failed), composed
here and emitted through the core's events (`portal.events`: stored, sent to signed outbound webhooks, emailed; the
kinds are registered in builds.releases.apps with their JSON Schemas in builds/releases/event_schemas/).

`notify(event=..., team=..., promotion=...)` is the one entry point, called by the promotion services and the worker that
applies promotions. Called inside a transaction, nothing is stored or sent for a change that rolled back.
"""

from __future__ import annotations

from portal import events
from portal.formatting import short_digest
from portal.models import Event, Team, User
from portal.notifications import site_url

from .gate import eligible_approvers
from .models import ApprovalDecision, Promotion, PromotionEvent, PromotionStatus

__all__ = ["PromotionEvent", "notify"]


def notify(*, event: str, team: Team, promotion: Promotion, actor: User | None = None) -> Event:
    """Tell the right people (email) and the team's webhooks about `event`, after the transaction commits."""
    event = PromotionEvent(event)
    data = _payload(promotion)
    subject, body = _email(event, {**data, "url": site_url(promotion.get_absolute_url())})
    what = "rollback" if promotion.kind == "rollback" else "promotion"
    return events.emit(
        type=event.value, team=team, data=data, actor=actor,
        subject=events.Subject(kind="promotion", id=promotion.pk,
                               name=f"{what} #{promotion.pk}: {promotion.definition} {short_digest(promotion.digest)} "
                                    f"to {promotion.target_stage.name}",
                               path=promotion.get_absolute_url(), api_path=f"/api/v1/promotions/{promotion.pk}/"),
        recipients=_recipients(event, promotion, actor), email_subject=subject, email_body=body)


def _recipients(event, promotion, actor) -> set[User]:
    people: set[User] = set()
    if event == PromotionEvent.APPROVAL_REQUESTED:
        people.update(eligible_approvers(promotion))
    else:
        if promotion.requested_by is not None:
            people.add(promotion.requested_by)
        people.update(a.approver for a in promotion.approvals.filter(decision=ApprovalDecision.APPROVE,
                                                                     superseded_at__isnull=True).select_related("approver")
                      if a.approver is not None)
    if actor is not None:
        people.discard(actor)  # they know: they just did it
    return people


def _payload(promotion) -> dict:
    decisions = promotion.approvals.filter(superseded_at__isnull=True).order_by("created_at")
    return {
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
        "build": {"id": promotion.build_id, "number": promotion.build.number,
                  "url": site_url(promotion.build.get_absolute_url())},
        "decisions": [{"by": a.approver_name, "decision": a.decision, "comment": a.comment,
                       "at": a.created_at.isoformat(timespec="seconds")} for a in decisions],
    }


def _email(event, p) -> tuple[str, str]:
    """The email's subject (the core adds the portal's prefix) and body."""
    what = f"{p['definition']} {short_digest(p['digest'])} to {p['stage']}"
    kind = "rollback" if p["kind"] == "rollback" else "promotion"
    decided = "rejected" if p["status"] == PromotionStatus.REJECTED else "approved"
    subject = {
        PromotionEvent.APPROVAL_REQUESTED: f"Approval requested: {what}",
        PromotionEvent.APPROVED: f"{kind.capitalize()} {decided}: {what}",
        PromotionEvent.REJECTED: f"{kind.capitalize()} {decided}: {what}",
        PromotionEvent.APPLIED: f"{kind.capitalize()} applied: {what}",
        PromotionEvent.FAILED: f"{kind.capitalize()} failed: {what}",
    }[event]
    lines = [
        subject, "",
        f"Requested by {p['requested_by']}: {p['reason']}",
        f"Image: {p['repository']}@{p['digest']}",
        f"Stage: {p['stage']} ({p['reference']})"
        + (f", now {short_digest(p['previous_digest'])}" if p["previous_digest"] else ""),
    ]
    if p["emergency"]:
        lines.append("This is an emergency override: it applies during a freeze or outside change windows.")
    if p["status_note"]:
        lines.append(p["status_note"])
    for d in p["decisions"]:
        verb = "approved" if d["decision"] == ApprovalDecision.APPROVE else "rejected"
        lines.append(f"- {d['by']} {verb}" + (f": {d['comment']}" if d["comment"] else ""))
    action = "Review and decide" if event == PromotionEvent.APPROVAL_REQUESTED else "Open it"
    lines += ["", f"{action}: {p['url']}"]
    return subject, "\n".join(lines) + "\n"
