"""The REST API's event list (`/api/v1/events/`): the stored events (portal.events) a token's user may see, for the
CLI's `watch` and any pipeline that polls instead of receiving webhooks. Read-only, scope `read`; registered through
`portal.registry.api_router` like every router."""

from typing import Any

from ninja import Field, Query, Router, Schema

from . import events
from .api import Problem, token_auth

router = Router(tags=["events"], auth=token_auth("read"))


class EventTeam(Schema):
    slug: str
    name: str


class EventSubject(Schema):
    kind: str = Field(..., description="build, promotion, host or retention_run")
    id: int | str
    name: str
    url: str = Field(..., description="Its page on the portal.")
    api_url: str | None = Field(..., description="Its resource in this API, when it has one.")


class EventOut(Schema):
    id: str = Field(..., description="The event's UUID; pass it as `after` to read what followed.")
    type: str
    version: int
    time: str = Field(..., description="ISO 8601 in UTC with milliseconds, e.g. 2026-12-03T19:55:36.515Z.")
    team: EventTeam | None
    actor: str | None
    subject: EventSubject
    data: dict[str, Any] = Field(..., description="The type's own fields: its JSON Schema is at types/{type}/schema/.")


class EventPageOut(Schema):
    items: list[EventOut]
    last: str | None = Field(..., description="The last item's id (or `after` when nothing new came): the next `after`.")


class EventTypeOut(Schema):
    type: str
    version: int
    label: str


TYPES_QUERY = Query(None, max_length=20, description="Only these types (repeat the parameter).")


@router.get("/", response=EventPageOut, summary="Events, oldest first")
def event_list(request, after: str | None = Query(None, max_length=64),
               team: str | None = Query(None, max_length=100),
               type: list[str] | None = TYPES_QUERY,
               limit: int = Query(100, ge=1, le=events.LIST_LIMIT_MAX)):
    """Without `after`, the latest `limit` events; with it, the `limit` that followed that event. Events of the teams
    the token's user is a member of (any role); a superuser's include portal-wide ones (retention.run)."""
    try:
        page = events.event_list(user=request.user, after=after, team=team, types=type, limit=limit)
    except ValueError as exc:
        field = str(exc).split(":", 1)[0]
        raise Problem(400, str(exc), errors=[{"field": f"query.{field}", "message": str(exc)}]) from None
    return {"items": page.items, "last": page.last}


@router.get("/types/", response=list[EventTypeOut], summary="Kinds of event and their versions")
def event_type_list(request):
    return events.event_types()


@router.get("/types/{type}/schema/", response=dict[str, Any], summary="A kind of event's JSON Schema")
def event_type_schema(request, type: str):
    """The whole event's JSON Schema (draft 2020-12): the envelope with this type's `data`."""
    return events.schema_for(type)
