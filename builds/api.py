"""Builds' routers of the REST API (/api/v1/, `portal.api`): image definitions, their revisions (a Containerfile with
its build context), and builds (trigger, cancel, retry, compare). Registered in `BuildsConfig.ready`.

Each operation looks its object up with `builds.access` and changes it through `builds.services`, as the pages do.
"""

import base64
import binascii
import difflib
from datetime import datetime
from typing import Literal

from django.db.models import Q
from django.http import Http404
from django.urls import reverse
from ninja import Field, Query, Router, Schema, Status

from portal import services as portal_services
from portal.access import get_team_for_user
from portal.api import PAGE_LIMIT_DEFAULT, Body, Problem, page_of, paginate, token_auth
from portal.models import Action, Scope, Team

from . import compare, services
from .access import get_build_for_user, get_definition_for_user, get_revision_for_user
from .forms import BuildFilter
from .models import Build, BuildStatus, ContextKind, ImageDefinition, Revision, Schedule

# --- Schemas ---------------------------------------------------------------------------------------------------------


class BuildOut(Schema):
    id: int
    url: str = Field(..., description="The build's page.")
    api_url: str
    definition: str = Field(..., description="team/name")
    definition_id: int
    number: int
    revision: int
    revision_sha256: str
    platform: str
    status: BuildStatus
    phase: str
    trigger: str
    started_by: str | None
    run_id: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    digest: str | None
    image: str | None
    tags: list[str]
    size: int | None
    architecture: str | None
    reason: str | None
    failed_step: str | None
    hint: str | None
    log_url: str = Field(..., description="The whole log as text (GET /api/v1/runs/{run_id}/log/ pages it).")


class DefinitionOut(Schema):
    id: int
    team: str
    name: str
    description: str
    repository: str
    platforms: list[str]
    build_args: dict[str, str]
    schedule: str
    timeout_minutes: int
    current_revision: int | None
    latest_build: BuildOut | None
    url: str


class DefinitionIn(Body):
    team: str = Field(..., max_length=100, description="The team's slug.")
    name: str = Field(..., min_length=1, max_length=64)
    description: str = Field("", max_length=5000)
    repository: str = Field("", max_length=255, description="Empty: the team's default repository for this name.")
    platforms: list[str] | None = Field(None, max_length=8)
    build_args: dict[str, str] | None = None
    schedule: Schedule = Schedule.NONE
    timeout_minutes: int = Field(60, ge=1, le=1440)


class DefinitionPatch(Body):
    description: str | None = Field(None, max_length=5000)
    repository: str | None = Field(None, max_length=255)
    platforms: list[str] | None = Field(None, max_length=8)
    build_args: dict[str, str] | None = None
    schedule: Schedule | None = None
    timeout_minutes: int | None = Field(None, ge=1, le=1440)


class RevisionOut(Schema):
    number: int
    definition_id: int
    sha256: str
    message: str
    author: str
    created_at: datetime
    context_kind: ContextKind
    git_url: str
    git_ref: str
    git_subdir: str
    context_files: list[str]
    warnings: list[dict]
    containerfile: str


class RevisionIn(Body):
    containerfile: str = Field(..., min_length=1, max_length=200_000)
    message: str = Field("", max_length=500)
    context_kind: ContextKind = ContextKind.NONE
    git_url: str = Field("", max_length=500)
    git_ref: str = Field("", max_length=200)
    git_subdir: str = Field("", max_length=300)
    context_files: dict[str, str] = Field(default_factory=dict, description="path -> content, base64-encoded "
                                                                            "(context_kind files).")


class BuildIn(Body):
    definition: int | str = Field(..., description="The definition's id, or team/name.")
    revision: int | None = Field(None, ge=1, description="A revision number; default: the current one.")
    platform: str | None = Field(None, max_length=32, description="Default: one build per platform of the definition.")


class BuildsOut(Schema):
    builds: list[BuildOut]


class PackageChange(Schema):
    name: str
    old: str | None
    new: str | None


class ComparisonOut(Schema):
    old: BuildOut
    new: BuildOut
    same_revision: bool
    base_changed: bool
    size_delta: int | None
    containerfile_diff: list[str] = Field(..., description="Unified-diff lines of the Containerfiles (empty: same).")
    packages_added: list[PackageChange]
    packages_removed: list[PackageChange]
    packages_changed: list[PackageChange]
    labels: list[list[str | None]] = Field(..., description="[label, old, new, change] rows.")


def build_out(request, build):
    run = build.run
    return {
        "id": build.pk, "url": request.build_absolute_uri(build.get_absolute_url()),
        "api_url": request.build_absolute_uri(reverse("api:build_detail", args=[build.pk])),
        "definition": f"{build.definition.team.slug}/{build.definition.name}", "definition_id": build.definition_id,
        "number": build.number, "revision": build.revision.number, "revision_sha256": build.revision.sha256,
        "platform": build.platform, "status": build.status, "phase": run.phase, "trigger": run.trigger,
        "started_by": run.started_by.username if run.started_by_id else None, "run_id": run.pk,
        "created_at": run.created_at, "started_at": run.started_at, "finished_at": run.finished_at,
        "digest": build.digest or None, "image": build.image_ref or None, "tags": build.tags or [], "size": build.size,
        "architecture": build.architecture or None, "reason": run.exit_reason or None,
        "failed_step": build.failed_step or None, "hint": build.hint or None,
        "log_url": request.build_absolute_uri(reverse("portal:run_log_raw", args=[run.pk])),
    }


def definition_out(request, definition, latest=None):
    revision = definition.current_revision()
    return {
        "id": definition.pk, "team": definition.team.slug, "name": definition.name,
        "description": definition.description, "repository": definition.repository, "platforms": definition.platforms,
        "build_args": definition.build_args, "schedule": definition.schedule,
        "timeout_minutes": definition.timeout_minutes, "current_revision": revision.number if revision else None,
        "latest_build": build_out(request, latest) if latest else None,
        "url": request.build_absolute_uri(definition.get_absolute_url()),
    }


def revision_out(revision):
    return {
        "number": revision.number, "definition_id": revision.definition_id, "sha256": revision.sha256,
        "message": revision.message, "author": revision.author_name, "created_at": revision.created_at,
        "context_kind": revision.context_kind, "git_url": revision.git_url, "git_ref": revision.git_ref,
        "git_subdir": revision.git_subdir, "context_files": [f.path for f in revision.context_files.all()],
        "warnings": revision.warnings or [], "containerfile": revision.containerfile,
    }


def _latest_builds(definitions):
    return Build.objects.with_related().in_bulk([d.latest_build_id for d in definitions if d.latest_build_id])


# --- Definitions -----------------------------------------------------------------------------------------------------

definitions = Router(tags=["definitions"])


@definitions.get("", response=page_of(DefinitionOut), summary="Image definitions the caller sees")
def definition_list(request, team: str | None = None, q: str = Query("", max_length=200), cursor: str | None = None,
                    limit: int = PAGE_LIMIT_DEFAULT):
    """Filters as on the definitions page: `team` (slug) and `q` (in the name, description or repository)."""
    queryset = ImageDefinition.objects.visible_to(request.user).select_related("team").with_latest_build()
    if team:
        queryset = queryset.filter(team__slug=team)
    q = q.replace("\x00", "").strip()
    if q:
        queryset = queryset.filter(Q(name__icontains=q) | Q(description__icontains=q) | Q(repository__icontains=q))
    page = paginate(queryset, cursor=cursor, limit=limit)
    latest = _latest_builds(page["items"])
    page["items"] = [definition_out(request, d, latest.get(d.latest_build_id)) for d in page["items"]]
    return page


@definitions.post("", response={201: DefinitionOut}, auth=token_auth(Scope.BUILD), summary="Create a definition")
def definition_create(request, payload: DefinitionIn):
    team = get_team_for_user(request.user, payload.team, action=Action.DEVELOP)
    if ImageDefinition.objects.filter(team=team, name=payload.name).exists():
        raise Problem(409, f"{team} already has a definition named {payload.name!r}.", slug="conflict")
    definition = services.definition_create(
        team=team, user=request.user, name=payload.name, description=payload.description,
        repository=payload.repository, platforms=payload.platforms, build_args=payload.build_args,
        schedule=payload.schedule, timeout_minutes=payload.timeout_minutes, request=request)
    return Status(201, definition_out(request, definition))


def _definition(request, definition_id, action=Action.VIEW):
    return get_definition_for_user(request.user, definition_id, action=action)


@definitions.get("{definition_id}/", response=DefinitionOut, summary="One definition")
def definition_detail(request, definition_id: int):
    definition = _definition(request, definition_id)
    latest = definition.builds.with_related().order_by("-number").first()
    return definition_out(request, definition, latest)


@definitions.patch("{definition_id}/", response=DefinitionOut, auth=token_auth(Scope.BUILD),
                   summary="Change a definition (only the fields sent)")
def definition_update(request, definition_id: int, payload: DefinitionPatch):
    definition = _definition(request, definition_id, Action.DEVELOP)
    changes = {name: value for name, value in payload.model_dump(exclude_unset=True).items() if value is not None}
    definition = services.definition_update(definition=definition, user=request.user, request=request, **changes)
    return definition_out(request, definition, definition.builds.with_related().order_by("-number").first())


@definitions.get("{definition_id}/revisions/", response=page_of(RevisionOut), summary="A definition's revisions")
def revision_list(request, definition_id: int, cursor: str | None = None, limit: int = PAGE_LIMIT_DEFAULT):
    definition = _definition(request, definition_id)
    queryset = Revision.objects.filter(definition=definition).prefetch_related("context_files")
    return paginate(queryset, cursor=cursor, limit=limit, key=revision_out)


@definitions.post("{definition_id}/revisions/", response={201: RevisionOut}, auth=token_auth(Scope.BUILD),
                  summary="Save a new revision: a Containerfile and its build context")
def revision_create(request, definition_id: int, payload: RevisionIn):
    definition = _definition(request, definition_id, Action.DEVELOP)
    files = {}
    for path, encoded in payload.context_files.items():
        try:
            files[path] = base64.b64decode(encoded.encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeError):
            raise Problem(400, f"body.context_files.{path}: not base64", slug="invalid",
                          errors=[{"field": f"body.context_files.{path}", "message": "not base64"}]) from None
    revision = services.revision_create(
        definition=definition, user=request.user, containerfile=payload.containerfile, message=payload.message,
        context_kind=payload.context_kind, git_url=payload.git_url, git_ref=payload.git_ref,
        git_subdir=payload.git_subdir, context_files=files, request=request)
    return Status(201, revision_out(revision))


@definitions.get("{definition_id}/revisions/{number}/", response=RevisionOut, summary="One revision")
def revision_detail(request, definition_id: int, number: int):
    return revision_out(get_revision_for_user(request.user, definition_id, number))


# --- Builds ----------------------------------------------------------------------------------------------------------

builds = Router(tags=["builds"])


@builds.get("", response=page_of(BuildOut), summary="Builds the caller sees, newest first")
def build_list(request, team: str | None = None, definition: int | None = None, status: BuildStatus | None = None,
               trigger: Literal["button", "api", "webhook", "schedule"] | None = None,
               q: str = Query("", max_length=200), cursor: str | None = None, limit: int = PAGE_LIMIT_DEFAULT):
    """Filters as on the builds page: `team` (slug), `status`, `trigger`, `q` (a definition's name, a digest, a build
    number); and `definition` (an id)."""
    base = Build.objects.visible_to(request.user).with_related()
    if definition is not None:
        base = base.filter(definition_id=definition)
    teams = Team.objects.visible_to(request.user)
    data = {"q": q.replace("\x00", ""), "status": status or "", "trigger": trigger or ""}
    if team:
        data["team"] = str(teams.filter(slug=team).values_list("pk", flat=True).first() or 0)
    found = BuildFilter(data, queryset=base, teams=teams)  # the builds page's own filter
    queryset = found.qs if found.is_valid() else base.none()
    return paginate(queryset, cursor=cursor, limit=limit, key=lambda build: build_out(request, build))


def _definition_named(request, value):
    """A definition by id or "team/name", or 404 (the same for one of another team)."""
    if isinstance(value, int):
        return get_definition_for_user(request.user, value, action=Action.DEVELOP)
    team_slug, _, name = value.rpartition("/")
    if not team_slug or "\x00" in value:
        raise Problem(400, "body.definition: an id or team/name", slug="invalid",
                      errors=[{"field": "body.definition", "message": "an id or team/name"}])
    team = get_team_for_user(request.user, team_slug)
    found = ImageDefinition.objects.filter(team=team, name=name).first()
    if found is None:
        raise Http404
    return get_definition_for_user(request.user, found.pk, action=Action.DEVELOP)


@builds.post("", response={201: BuildsOut}, auth=token_auth(Scope.BUILD),
             summary="Build a revision (the current one by default), on one platform or all")
def build_create(request, payload: BuildIn):
    definition = _definition_named(request, payload.definition)
    if payload.revision is None:
        revision = definition.current_revision()
        if revision is None:
            raise Problem(409, f"{definition} has no revision yet: save one first.", slug="conflict")
    else:
        revision = get_revision_for_user(request.user, definition.pk, payload.revision)
    if payload.platform is not None and payload.platform not in definition.platforms:
        raise Problem(400, f"body.platform: one of {', '.join(definition.platforms)}", slug="invalid",
                      errors=[{"field": "body.platform", "message": f"one of {', '.join(definition.platforms)}"}])
    if payload.platform:
        started = [services.build_start(revision=revision, user=request.user, trigger="api",
                                        platform=payload.platform, request=request)]
    else:
        started = services.build_start_all(revision=revision, user=request.user, trigger="api", request=request)
    started = Build.objects.with_related().filter(pk__in=[b.pk for b in started]).order_by("pk")
    return Status(201, {"builds": [build_out(request, build) for build in started]})


@builds.get("{build_id}/", response=BuildOut, summary="One build: status, digest, timestamps, failure summary")
def build_detail(request, build_id: int):
    return build_out(request, get_build_for_user(request.user, build_id))


@builds.post("{build_id}/cancel/", response=BuildOut, auth=token_auth(Scope.BUILD), summary="Cancel a build")
def build_cancel(request, build_id: int):
    build = get_build_for_user(request.user, build_id, action=Action.DEVELOP)
    if build.run.is_finished:
        raise Problem(409, f"{build} had already ended ({build.status}).", slug="conflict")
    portal_services.run_request_cancel(run=build.run, user=request.user, request=request)
    return build_out(request, get_build_for_user(request.user, build_id))


@builds.post("{build_id}/retry/", response={201: BuildOut}, auth=token_auth(Scope.BUILD),
             summary="Build the same revision and platform again, as a new build")
def build_retry(request, build_id: int):
    build = get_build_for_user(request.user, build_id, action=Action.DEVELOP)
    if build.is_active:
        raise Problem(409, f"{build} is still {build.status}; cancel it or wait for it to end.", slug="conflict")
    new = services.build_retry(build=build, user=request.user, trigger="api", request=request)
    return Status(201, build_out(request, get_build_for_user(request.user, new.pk)))


@builds.get("{build_id}/compare/{other_id}/", response=ComparisonOut,
            summary="What changed from one build to another: Containerfile, base, packages, labels, size")
def build_compare(request, build_id: int, other_id: int):
    old = get_build_for_user(request.user, build_id)
    new = get_build_for_user(request.user, other_id)
    comparison = compare.compare_builds(old, new)
    packages = comparison.packages
    return {
        "old": build_out(request, old), "new": build_out(request, new),
        "same_revision": comparison.same_revision, "base_changed": comparison.base_changed,
        "size_delta": comparison.size_delta,
        "containerfile_diff": [] if comparison.same_revision else list(difflib.unified_diff(
            old.revision.containerfile.split("\n"), new.revision.containerfile.split("\n"),
            f"r{old.revision.number}", f"r{new.revision.number}", lineterm="")),
        "packages_added": [{"name": n, "old": None, "new": v} for n, v in packages.added],
        "packages_removed": [{"name": n, "old": v, "new": None} for n, v in packages.removed],
        "packages_changed": [{"name": n, "old": a, "new": b} for n, a, b in packages.upgraded + packages.downgraded],
        "labels": [list(row) for row in comparison.labels],
    }

