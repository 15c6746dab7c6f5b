"""The core's routers of the REST API: teams, members and roles; the caller's API tokens; runs and their logs.

The pattern every router follows (features' routers too): look the object up with its access helper (404 outside the
caller's teams, 403 for a role that may not act), call the one service that makes the change, return a schema.
"""

from datetime import datetime

from django.contrib.auth import get_user_model
from django.http import Http404
from ninja import Field, Query, Router, Schema, Status

from . import logsink, services
from . import tokens as access_tokens
from .access import get_run_for_user, get_team_for_user, role_in
from .api import PAGE_LIMIT_DEFAULT, Body, Problem, page_of, paginate, require_scope, token_auth
from .models import AccessToken, Action, Membership, Role, Run, Scope, Team, action_to_cancel

# --- Schemas ---------------------------------------------------------------------------------------------------------


class TeamOut(Schema):
    slug: str
    name: str
    description: str
    require_two_factor: bool
    role: str | None = Field(None, description="The caller's role in the team (none for a superuser who is no member).")


class TeamIn(Body):
    name: str = Field(..., min_length=1, max_length=100)
    description: str = Field("", max_length=2000)


class MemberOut(Schema):
    username: str
    name: str
    role: Role
    since: datetime


class MemberIn(Body):
    username: str = Field(..., min_length=1, max_length=150)
    role: Role


class RoleIn(Body):
    role: Role


class TokenOut(Schema):
    id: int
    name: str
    hint: str
    scopes: list[str]
    team: str | None
    state: str = Field(..., description="active, expired or revoked")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class RunOut(Schema):
    id: int
    kind: str
    title: str
    team: str
    status: str
    phase: str
    trigger: str
    started_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    reason: str | None
    log_lines: int
    url: str


class LogLine(Schema):
    seq: int
    text: str


class LogPage(Schema):
    first: int = Field(..., description="The number of the first line in `lines` (lines are numbered from 1).")
    lines: list[LogLine]
    last: int = Field(..., description="The number of the last line stored so far.")
    next_after: int = Field(..., description="Ask with after=<this> for the lines that follow.")
    finished: bool = Field(..., description="The run has ended and every line up to `last` is stored.")


def team_out(team, user):
    return {"slug": team.slug, "name": team.name, "description": team.description,
            "require_two_factor": team.require_two_factor, "role": role_in(user, team)}


def member_out(membership):
    user = membership.user
    return {"username": user.username, "name": user.get_full_name(), "role": membership.role,
            "since": membership.created_at}


def token_out(token):
    return {"id": token.pk, "name": token.name, "hint": token.hint, "scopes": token.scopes,
            "team": token.team.slug if token.team_id else None, "state": token.state(), "created_at": token.created_at,
            "expires_at": token.expires_at, "last_used_at": token.last_used_at}


def run_out(request, run):
    return {"id": run.pk, "kind": run.kind, "title": run.title, "team": run.team.slug, "status": run.status,
            "phase": run.phase, "trigger": run.trigger,
            "started_by": run.started_by.username if run.started_by_id else None, "created_at": run.created_at,
            "started_at": run.started_at, "finished_at": run.finished_at, "reason": run.exit_reason or None,
            "log_lines": run.log_lines, "url": request.build_absolute_uri(run.get_absolute_url())}


# --- Teams and members -----------------------------------------------------------------------------------------------

teams = Router(tags=["teams"])


@teams.get("", response=page_of(TeamOut), summary="The teams the caller sees")
def team_list(request, q: str = "", cursor: str | None = None, limit: int = PAGE_LIMIT_DEFAULT):
    queryset = Team.objects.visible_to(request.user)
    if q:
        queryset = queryset.filter(name__icontains=q)
    return paginate(queryset, cursor=cursor, limit=limit, key=lambda team: team_out(team, request.user))


@teams.post("", response={201: TeamOut}, auth=token_auth(Scope.ADMIN), summary="Create a team (portal admins)")
def team_create(request, payload: TeamIn):
    if not request.user.is_superuser:
        raise Problem(403, "Only portal administrators create teams.", slug="forbidden")
    if Team.objects.filter(slug=Team.slug_for(payload.name)).exists() or Team.objects.filter(name=payload.name).exists():
        raise Problem(409, f"A team named {payload.name!r} exists already.", slug="conflict")
    if not Team.slug_for(payload.name):
        raise Problem(400, "body.name: needs a letter or a digit", slug="invalid",
                      errors=[{"field": "body.name", "message": "needs a letter or a digit"}])
    team = services.team_create(name=payload.name, description=payload.description, actor=request.user,
                                request=request)
    return Status(201, team_out(team, request.user))


@teams.get("{slug}/", response=TeamOut, summary="One team")
def team_detail(request, slug: str):
    return team_out(get_team_for_user(request.user, slug), request.user)


@teams.get("{slug}/members/", response=page_of(MemberOut), summary="A team's members and their roles")
def member_list(request, slug: str, role: Role | None = None, cursor: str | None = None,
                limit: int = PAGE_LIMIT_DEFAULT):
    team = get_team_for_user(request.user, slug)
    queryset = Membership.objects.filter(team=team).people().select_related("user")
    if role:
        queryset = queryset.filter(role=role)
    return paginate(queryset, cursor=cursor, limit=limit, key=member_out)


def _membership(team, username):
    membership = Membership.objects.filter(team=team, user__username=username).select_related("user").first()
    if membership is None:
        raise Http404
    return membership


@teams.post("{slug}/members/", response={201: MemberOut}, auth=token_auth(Scope.ADMIN), summary="Add a member")
def member_add(request, slug: str, payload: MemberIn):
    team = get_team_for_user(request.user, slug, action=Action.ADMIN)
    user = get_user_model().objects.filter(username=payload.username, is_active=True).first()
    if user is None:
        raise Problem(400, f"body.username: no active user {payload.username!r}", slug="invalid",
                      errors=[{"field": "body.username", "message": f"no active user {payload.username!r}"}])
    if Membership.objects.filter(team=team, user=user).exists():
        raise Problem(409, f"{user.username} is already in {team}; change their role instead.", slug="conflict")
    membership = services.membership_set(team=team, user=user, role=payload.role, actor=request.user, request=request)
    return Status(201, member_out(Membership.objects.select_related("user").get(pk=membership.pk)))


@teams.patch("{slug}/members/{username}/", response=MemberOut, auth=token_auth(Scope.ADMIN),
             summary="Change a member's role")
def member_role(request, slug: str, username: str, payload: RoleIn):
    team = get_team_for_user(request.user, slug, action=Action.ADMIN)
    membership = _membership(team, username)
    services.membership_set(team=team, user=membership.user, role=payload.role, actor=request.user, request=request)
    return member_out(_membership(team, username))


@teams.delete("{slug}/members/{username}/", response={204: None}, auth=token_auth(Scope.ADMIN),
              summary="Remove a member")
def member_remove(request, slug: str, username: str):
    team = get_team_for_user(request.user, slug, action=Action.ADMIN)
    membership = _membership(team, username)
    services.membership_remove(team=team, user=membership.user, actor=request.user, request=request)
    return Status(204, None)


# --- The caller's tokens ---------------------------------------------------------------------------------------------

tokens = Router(tags=["tokens"])


@tokens.get("", response=page_of(TokenOut), summary="The caller's API tokens (made on the API tokens page)")
def token_list(request, cursor: str | None = None, limit: int = PAGE_LIMIT_DEFAULT):
    queryset = AccessToken.objects.filter(user=request.user).select_related("team")
    return paginate(queryset, cursor=cursor, limit=limit, key=token_out)


@tokens.delete("{token_id}/", response={204: None}, summary="Revoke one of the caller's tokens (this one too)")
def token_revoke(request, token_id: int):
    token = AccessToken.objects.filter(pk=token_id, user=request.user).select_related("team").first()
    if token is None:
        raise Http404
    access_tokens.token_revoke(token=token, actor=request.user, request=request)
    return Status(204, None)


# --- Runs ------------------------------------------------------------------------------------------------------------

runs = Router(tags=["runs"])


@runs.get("{run_id}/", response=RunOut, summary="A run's status (a build, a conversion, a promotion, a host action)")
def run_detail(request, run_id: int):
    run = get_run_for_user(request.user, run_id)
    return run_out(request, run)


@runs.get("{run_id}/log/", response=LogPage, summary="A run's log by range of line numbers")
def run_log(request, run_id: int, after: int = Query(0, ge=0), limit: int = Query(1000, ge=1, le=5000),
            tail: bool = False):
    """Lines numbered after `after`, at most `limit` of them (the last `limit` with `tail=true`). To follow a running
    log, ask again with `after=next_after` until `finished`, or open the log websocket."""
    run = get_run_for_user(request.user, run_id)
    finished_before = run.is_finished
    first, lines, _ = logsink.lines_between(run, after=after, limit=limit, from_end=tail)
    last = logsink.last_seq(run)
    next_after = first + len(lines) - 1 if lines else after
    return {"first": first if lines else after + 1, "lines": [{"seq": first + i, "text": text}
                                                               for i, text in enumerate(lines)],
            "last": last, "next_after": next_after, "finished": finished_before and next_after >= last}


@runs.post("{run_id}/cancel/", response=RunOut, auth=token_auth(Scope.READ),
           summary="Cancel a run (build scope; operate for host actions)")
def run_cancel(request, run_id: int):
    run = get_run_for_user(request.user, run_id)
    require_scope(request, Scope.OPERATE if action_to_cancel(run.kind) == Action.OPERATE else Scope.BUILD)
    run = get_run_for_user(request.user, run_id, action=action_to_cancel(run.kind))
    if run.is_finished:
        raise Problem(409, f"{run} had already ended ({run.status}).", slug="conflict")
    if not run.stoppable():
        raise Problem(409, f"{run} has started its bootc command on the host; it runs to its end.", slug="conflict")
    services.run_request_cancel(run=run, user=request.user, request=request)
    return run_out(request, Run.objects.select_related("team", "started_by").get(pk=run.pk))


def routers():
    """(prefix, router) of the core, for portal.api.mount."""
    return [("teams/", teams), ("tokens/", tokens), ("runs/", runs)]

