"""Events: what users care about that happened, in one stable, versioned envelope (docs/events.md).

The core knows no kind of event: each feature registers its own (`portal.registry.notification_event`, with a version
and the JSON Schema of its `data`) and calls `emit(...)` from the service that made the change, inside its transaction.
`emit` writes the `Event` row and the webhook deliveries in that transaction and enqueues the emails and deliveries
after commit (`portal.notifications`), so nothing is stored or sent for a change that rolled back.

The envelope (schema: portal/event_schemas/envelope.v1.json):

    {"id": uuid, "type": "build.failed", "version": 1, "time": ISO 8601 UTC,
     "team": {"slug", "name"} or null, "actor": username or null,
     "subject": {"kind", "id", "name", "url", "api_url"}, "data": {...the type's own...}}

Readers: team webhooks subscribed to the type (the same envelope, plus the delivery's id), and `event_list`, which
the REST API serves to the CLI's `watch`. The retention pass removes stored events after EVENT_KEEP_DAYS.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path

from django.conf import settings
from django.http import Http404
from django.utils import timezone

from . import notifications, registry
from .access import get_team_for_user
from .models import Event, Team, User

ENVELOPE_SCHEMA = Path(__file__).parent / "event_schemas" / "envelope.v1.json"
LIST_LIMIT_MAX = 500


@dataclass(frozen=True)
class Subject:
    """What an event is about: `path` is its page on the portal, `api_path` its resource in the REST API."""

    kind: str
    id: int | str
    name: str
    path: str
    api_path: str = ""

    def as_dict(self) -> dict:
        return {"kind": self.kind, "id": self.id, "name": self.name, "url": notifications.site_url(self.path),
                "api_url": notifications.site_url(self.api_path) if self.api_path else None}


def emit(*, type: str, team: Team | None, subject: Subject, data: dict, actor: User | None = None,
         recipients: Iterable[User] = (), email_subject: str = "", email_body: str = "") -> Event:
    """Record that `type` happened to `subject`, send it to the webhooks subscribed to it (the team's, or every
    team's for a portal-wide event, team=None) and email `recipients`, after the transaction commits. Returns the
    stored event, with `deliveries` (the webhook deliveries made for it)."""
    spec = registry.event_type(type)
    if spec is None:
        raise ValueError(f"{type!r} is no registered kind of event")
    now = timezone.now()
    envelope = {
        "id": str(uuid.uuid4()),
        "type": type,
        "version": spec.version,
        "time": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "team": {"slug": team.slug, "name": team.name} if team is not None else None,
        "actor": actor.username if actor is not None else None,
        "subject": subject.as_dict(),
        "data": data,
    }
    # Through JSON once, so the row holds exactly what a receiver parses (dates and decimals as their text).
    envelope = json.loads(json.dumps(envelope, default=str))
    event = Event.objects.create(uuid=envelope["id"], type=type, version=spec.version, time=now, team=team,
                                 subject_kind=subject.kind, subject_id=str(subject.id), envelope=envelope)
    event.deliveries = notifications.send(event=type, team=team, payload=envelope, recipients=recipients,
                                          subject=email_subject, body=email_body)
    return event


# --- Reading ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventPage:
    """Envelopes, oldest first, and the id to pass as `after` for the next page (the last one's, or `after` itself
    when nothing new came)."""

    items: list[dict]
    last: str | None


def event_list(*, user, after: str | None = None, team: str | None = None, types: Iterable[str] | None = None,
               limit: int = 100) -> EventPage:
    """The events `user` may see (their teams', any role; superusers all). Without `after`, the latest `limit`;
    with it, the `limit` that followed that event. Raises ValueError naming a bad argument, Http404 for a team the
    user cannot see (as the pages do)."""
    queryset = Event.objects.visible_to(user)
    if team:
        queryset = queryset.filter(team=get_team_for_user(user, team))
    types = [t for t in (types or []) if t]
    unknown = [t for t in types if registry.event_type(t) is None]
    if unknown:
        raise ValueError(f"type: {', '.join(unknown)} is no kind of event (see the event types list)")
    if types:
        queryset = queryset.filter(type__in=types)
    limit = max(1, min(int(limit), LIST_LIMIT_MAX))
    if after:
        try:
            cursor = Event.objects.visible_to(user).filter(uuid=uuid.UUID(str(after))).values_list("sequence",
                                                                                                  flat=True).first()
        except ValueError:
            cursor = None
        if cursor is None:
            raise ValueError("after: no event with this id (it may have been removed by retention)")
        items = list(queryset.filter(sequence__gt=cursor).order_by("sequence").values_list("envelope", flat=True)
                     [:limit])
    else:
        items = list(queryset.order_by("-sequence").values_list("envelope", flat=True)[:limit])[::-1]
    return EventPage(items=items, last=items[-1]["id"] if items else after)


def event_types() -> list[dict]:
    """Every registered kind of event: type, version and label."""
    return [{"type": spec.kind, "version": spec.version, "label": spec.label} for spec in registry.event_types()]


@cache
def schema_for(type: str) -> dict:
    """The JSON Schema of a whole event of `type` at its registered version: the envelope's, with `type`, `version`
    and `data` pinned to the type's."""
    spec = registry.event_type(type)
    if spec is None:
        raise Http404(f"No kind of event {type!r}.")
    envelope = json.loads(ENVELOPE_SCHEMA.read_text())
    data = json.loads(Path(spec.schema).read_text()) if spec.schema else {"type": "object"}
    envelope["$id"] = f"{type}.v{spec.version}"
    envelope["title"] = spec.label
    envelope["properties"] = {**envelope["properties"], "type": {"const": type}, "version": {"const": spec.version},
                              "data": data}
    return envelope


# --- Retention -------------------------------------------------------------------------------------------------------


def prune_events(*, now, previous=None) -> dict:
    """Stored events older than EVENT_KEEP_DAYS (webhook deliveries have their own step)."""
    days = settings.EVENT_KEEP_DAYS
    if not days:
        return {"count": 0}
    count, _ = Event.objects.filter(time__lt=now - timedelta(days=days)).delete()
    return {"count": count}
