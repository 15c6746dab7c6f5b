"""What builds tell people: their events, composed here and delivered by the core's notifications
(`portal.notifications`: email and signed outbound webhooks; the kinds are registered in builds.apps). Promotions
compose theirs in builds.releases.notifications.

The builds pipeline calls `notify_build_failed(build=...)` when a build fails. Called inside a transaction, nothing is
sent for a change that rolled back.
"""

from __future__ import annotations

from portal import notifications
from portal.models import Action, User, WebhookDelivery
from portal.notifications import site_url

from .models import Build, BuildEvent

__all__ = ["BuildEvent", "notify_build_failed"]


def notify_build_failed(*, build: Build) -> list[WebhookDelivery]:
    """A build failed: tell its team (developers and up) and whoever started it, and the team's webhooks."""
    team = build.definition.team
    payload = {"build": _payload(build)}
    subject, body = _email(payload["build"])
    return notifications.send(event=BuildEvent.BUILD_FAILED.value, team=team, payload=payload, actor=None,
                              recipients=_recipients(team, build), subject=subject, body=body)


def _recipients(team, build) -> set[User]:
    people: set[User] = set(notifications.members_with(team, Action.DEVELOP))
    if build.run.started_by is not None:
        people.add(build.run.started_by)
    return people


def _payload(build) -> dict:
    run = build.run
    return {
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


def _email(b) -> tuple[str, str]:
    """The email's subject (the core adds the portal's prefix) and body."""
    subject = f"Build failed: {b['definition']} build {b['number']} ({b['platform']})"
    lines = [subject, "", b["reason"] or "(no reason recorded)"]
    if b["failed_step"]:
        lines.append(f"At: {b['failed_step']}")
    lines += ["", f"Build: {b['url']}", f"Log: {b['log']}"]
    return subject, "\n".join(lines) + "\n"
