"""The REST API of hosts: the fleet (the UI's filters), each host's bootc status, its timeline, and its actions
(upgrade, switch, rollback, reboot), which are runs with a live log like every long operation.

Reads follow the pages: members of the host's team, and the help desk across teams (`helpdesk_readable`), see a host;
actions need the operator role (and the `operate` scope) and go through `hosts.actions.host_action_request`, the
service the host page's buttons call.
"""

from datetime import datetime

from ninja import Field, Router, Schema, Status

from portal import ssh
from portal.api import PAGE_LIMIT_DEFAULT, Body, Problem, page_of, paginate, token_auth
from portal.models import Action, Scope

from . import actions, services
from .access import get_host_action_for_user, get_host_for_user
from .connect import ActionInProgress, HostError
from .models import ActionKind, EventKind, Host, HostAction, HostEvent, HostState

hosts = Router(tags=["hosts"])  # /api/v1/hosts/
host_actions = Router(tags=["hosts"])  # /api/v1/host-actions/
# Registered by their dotted paths in the app's ready() (portal.registry.api_router).

# --- Schemas ---------------------------------------------------------------------------------------------------------


class HostOut(Schema):
    id: int
    name: str
    team: str
    address: str
    labels: list[str]
    stage: str | None
    tracked_image: str
    mode: str = Field(..., description="ssh (the portal logs in) or agent (the host reports in)")
    state: HostState
    state_help: str
    drifting: bool
    reachable: bool
    is_bootc: bool
    architecture: str
    booted_image: str
    booted_digest: str
    booted_version: str
    staged_digest: str
    staged_version: str
    rollback_digest: str
    rollback_version: str
    rollback_queued: bool
    update_digest: str
    update_version: str
    expected_digest: str = Field(..., description="What the tracked reference (its stage's tag) resolves to.")
    status_at: datetime | None
    last_error: str
    last_action: int | None
    url: str


class HostStatusOut(Schema):
    id: int
    name: str
    status_at: datetime | None
    status: dict = Field(..., description="The status as the poller last parsed it from `bootc status --format=json` "
                                          "(every field optional).")


class HostEventOut(Schema):
    id: int
    at: datetime
    kind: EventKind
    summary: str
    digest: str
    version: str
    previous_digest: str
    previous_version: str
    automatic: bool
    user: str | None
    action: int | None


class HostActionOut(Schema):
    id: int
    host: int
    host_name: str
    kind: ActionKind
    image: str
    status: str = Field(..., description="The run's status: queued, running, succeeded, failed, cancelled.")
    phase: str
    outcome: str
    requested_by: str | None
    created_at: datetime
    finished_at: datetime | None
    run: int = Field(..., description="Its run: follow the log on /ws/runs/<run>/, or read /api/v1/runs/<run>/log/.")
    url: str


class HostActionIn(Body):
    kind: ActionKind
    image: str = Field("", max_length=512, description="For switch and switch_apply: registry/repository:tag or @sha256:...")


# --- Serialising -----------------------------------------------------------------------------------------------------


def host_out(request, host):
    return {
        "id": host.pk, "name": host.name, "team": host.team.slug, "address": host.address, "labels": host.label_list,
        "stage": host.stage.name if host.stage_id else None, "tracked_image": host.tracked_image, "mode": host.mode,
        "state": host.state, "state_help": host.state_help(), "drifting": host.drifting, "reachable": host.reachable,
        "is_bootc": host.is_bootc, "architecture": host.architecture, "booted_image": host.booted_image,
        "booted_digest": host.booted_digest, "booted_version": host.booted_version,
        "staged_digest": host.staged_digest, "staged_version": host.staged_version,
        "rollback_digest": host.rollback_digest, "rollback_version": host.rollback_version,
        "rollback_queued": host.rollback_queued, "update_digest": host.update_digest,
        "update_version": host.update_version, "expected_digest": host.expected_digest, "status_at": host.status_at,
        "last_error": host.last_error, "last_action": host.last_action_id,
        "url": request.build_absolute_uri(host.get_absolute_url()),
    }


def event_out(event):
    return {"id": event.pk, "at": event.at, "kind": event.kind, "summary": event.summary, "digest": event.digest,
            "version": event.version, "previous_digest": event.previous_digest,
            "previous_version": event.previous_version, "automatic": event.automatic,
            "user": event.user.username if event.user_id else None, "action": event.action_id}


def action_out(request, action):
    run = action.run
    return {"id": action.pk, "host": action.host_id, "host_name": action.host.name, "kind": action.kind,
            "image": action.image, "status": run.status, "phase": run.phase, "outcome": action.outcome,
            "requested_by": action.requested_by.username if action.requested_by_id else None,
            "created_at": action.created_at, "finished_at": action.finished_at, "run": run.pk,
            "url": request.build_absolute_uri(run.get_absolute_url())}


def _actions():
    return HostAction.objects.select_related("host", "host__team", "run", "requested_by")


# --- Hosts -----------------------------------------------------------------------------------------------------------


@hosts.get("", response=page_of(HostOut), summary="Hosts (the UI's filters: q, team, stage, state, label)")
def host_list(request, q: str = "", team: str | None = None, stage: str | None = None, state: HostState | None = None,
              label: str = "", name: str | None = None, drifting: bool | None = None, cursor: str | None = None,
              limit: int = PAGE_LIMIT_DEFAULT):
    queryset = Host.objects.visible_to(request.user).select_related("team", "stage")
    if team:
        queryset = queryset.filter(team__slug=team)
    if q.strip():
        queryset = queryset.search(q)
    if stage == "-":
        queryset = queryset.filter(stage__isnull=True)
    elif stage:
        queryset = queryset.filter(stage__name=stage)
    if state:
        queryset = queryset.filter(state=state)
    if label.strip():
        queryset = queryset.with_label(label)
    if name:
        queryset = queryset.filter(name=name)
    if drifting is not None:
        queryset = queryset.filter(drifting=drifting)
    return paginate(queryset, cursor=cursor, limit=limit, key=lambda host: host_out(request, host))


@hosts.get("{host_id}/", response=HostOut, summary="A host: booted, staged and rollback digests, state, drift")
def host_detail(request, host_id: int):
    return host_out(request, get_host_for_user(request.user, host_id))


@hosts.get("{host_id}/status/", response=HostStatusOut, summary="The host's bootc status as last read")
def host_status(request, host_id: int):
    host = get_host_for_user(request.user, host_id)
    return {"id": host.pk, "name": host.name, "status_at": host.status_at, "status": host.status or {}}


@hosts.get("{host_id}/timeline/", response=page_of(HostEventOut),
            summary="The host's timeline, newest first (deployments, rollbacks, reachability, actions)")
def host_timeline(request, host_id: int, kind: EventKind | None = None, cursor: str | None = None,
                  limit: int = PAGE_LIMIT_DEFAULT):
    host = get_host_for_user(request.user, host_id)
    queryset = HostEvent.objects.filter(host=host).select_related("user")
    if kind:
        queryset = queryset.filter(kind=kind)
    return paginate(queryset, cursor=cursor, limit=limit, key=event_out)


@hosts.post("{host_id}/poll/", response={202: HostOut}, auth=token_auth(Scope.OPERATE),
             summary="Read the host's status now instead of at its turn (hosts the portal logs in to)")
def host_poll(request, host_id: int):
    host = get_host_for_user(request.user, host_id, action=Action.OPERATE)
    if host.reports_in:
        raise Problem(409, f"{host} reports in by itself (every minute); the portal does not log in to it.",
                      slug="conflict")
    if not host.trusted:
        raise Problem(409, f"Confirm {host}'s host key first: nothing is sent to a host whose key nobody confirmed.",
                      slug="conflict")
    services._enqueue_poll([host.pk])
    return Status(202, host_out(request, host))


# --- Actions ---------------------------------------------------------------------------------------------------------


@hosts.get("{host_id}/actions/", response=page_of(HostActionOut), summary="The host's actions, newest first")
def host_action_list(request, host_id: int, cursor: str | None = None, limit: int = PAGE_LIMIT_DEFAULT):
    host = get_host_for_user(request.user, host_id)
    return paginate(_actions().filter(host=host), cursor=cursor, limit=limit, key=lambda a: action_out(request, a))


@hosts.post("{host_id}/actions/", response={201: HostActionOut}, auth=token_auth(Scope.OPERATE),
             summary="Act on a host: upgrade_check, upgrade_stage, upgrade_apply, switch, switch_apply, rollback, "
                     "rollback_apply, reboot")
def host_action_create(request, host_id: int, payload: HostActionIn):
    host = get_host_for_user(request.user, host_id, action=Action.OPERATE)
    image = payload.image.strip()
    if payload.kind in (ActionKind.SWITCH, ActionKind.SWITCH_APPLY) and not ssh.valid_image_reference(image):
        message = "the image to switch to, as registry/repository:tag or registry/repository@sha256:..."
        raise Problem(400, f"body.image: {message}", slug="invalid", errors=[{"field": "body.image", "message": message}])
    try:
        action = actions.host_action_request(host=host, kind=payload.kind, user=request.user, image=image,
                                             request=request)
    except ActionInProgress as exc:
        raise Problem(409, str(exc), slug="conflict") from None
    except HostError as exc:
        raise Problem(409, str(exc), slug="conflict") from None
    return Status(201, action_out(request, _actions().get(pk=action.pk)))


@host_actions.get("{action_id}/", response=HostActionOut, summary="A host action and its run's status")
def host_action_detail(request, action_id: int):
    action = get_host_action_for_user(request.user, action_id)
    return action_out(request, _actions().get(pk=action.pk))
