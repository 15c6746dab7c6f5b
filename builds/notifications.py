"""What builds tell people: their events (build.started, build.succeeded, build.failed), composed here and emitted
through the core's events (`portal.events`: stored, sent to signed outbound webhooks, emailed; the kinds are
registered in builds.apps with their JSON Schemas in builds/event_schemas/). Promotions compose theirs in
builds.releases.notifications.

The builds pipeline calls `notify_build(event=..., build=...)` when a build starts and when its run ends. Called inside
a transaction, nothing is stored or sent for a change that rolled back. Only a failure is emailed.
"""

from __future__ import annotations

from portal import events, notifications
from portal.models import Action, Event, User
from portal.notifications import site_url

from .models import Build, BuildEvent

__all__ = ["BuildEvent", "build_subject", "notify_build", "notify_build_failed"]


def build_subject(build: Build) -> events.Subject:
    return events.Subject(kind="build", id=build.pk, name=f"{build.definition} build {build.number}",
                          path=build.get_absolute_url(), api_path=f"/api/v1/builds/{build.pk}/")


def notify_build(*, event: BuildEvent, build: Build) -> Event:
    """Emit `event` for `build` to its team; a failure is also emailed (developers and up, and whoever started it)."""
    event = BuildEvent(event)
    team = build.definition.team
    data = _data(build)
    email = {}
    if event == BuildEvent.BUILD_FAILED:
        subject, body = _email(data, site_url(build.get_absolute_url()))
        email = {"recipients": _recipients(team, build), "email_subject": subject, "email_body": body}
    return events.emit(type=event.value, team=team, subject=build_subject(build), data=data,
                       actor=build.run.started_by if event == BuildEvent.BUILD_STARTED else None, **email)


def notify_build_failed(*, build: Build) -> Event:
    return notify_build(event=BuildEvent.BUILD_FAILED, build=build)


def _recipients(team, build) -> set[User]:
    people: set[User] = set(notifications.members_with(team, Action.DEVELOP))
    if build.run.started_by is not None:
        people.add(build.run.started_by)
    return people


def _data(build) -> dict:
    run = build.run
    run.refresh_from_db(fields=["status", "exit_reason", "started_at", "finished_at"])
    build.refresh_from_db(fields=["digest", "failed_step"])
    return {
        "number": build.number,
        "definition": {"id": build.definition_id, "name": str(build.definition),
                       "repository": build.repository or build.definition.repository},
        "revision": build.revision.number,
        "platform": build.platform,
        "status": run.status,
        "digest": build.digest or None,
        "reason": run.exit_reason,
        "failed_step": build.failed_step,
        "started_by": run.started_by.username if run.started_by else None,
        "started_at": run.started_at.isoformat(timespec="seconds") if run.started_at else None,
        "finished_at": run.finished_at.isoformat(timespec="seconds") if run.finished_at else None,
        "run": {"id": run.pk, "url": site_url(run.get_absolute_url())},
    }


def _email(d, url) -> tuple[str, str]:
    """The email's subject (the core adds the portal's prefix) and body."""
    subject = f"Build failed: {d['definition']['name']} build {d['number']} ({d['platform']})"
    lines = [subject, "", d["reason"] or "(no reason recorded)"]
    if d["failed_step"]:
        lines.append(f"At: {d['failed_step']}")
    lines += ["", f"Build: {url}", f"Log: {d['run']['url']}"]
    return subject, "\n".join(lines) + "\n"
