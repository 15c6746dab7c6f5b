"""The REST API of releases: stages (and what each holds), promotion requests, approvals and rollbacks.

Requests, approvals and rollbacks go through the same services as the pages (`builds.releases.services`), as the
token's user: the same gate, the same rule that the requester, the revision's author and the build's starter may not
approve (where the stage says so), the same second factor where a team asks for one (a token counts as verified only
when it was made in a sign-in verified with one). Team tokens act through a user of their own that never approves.
"""

from datetime import datetime

from django.db.models import Q
from django.http import Http404
from ninja import Field, Router, Schema, Status

from builds.access import get_definition_by_reference_for_user
from builds.models import Build
from portal.api import PAGE_LIMIT_DEFAULT, Body, Problem, page_of, paginate, token_auth
from portal.models import Action, Scope, Team

from . import gate, services
from .access import get_promotion_for_user, get_stage_for_user
from .models import Promotion, PromotionKind, PromotionStatus, Stage

stages = Router(tags=["releases"])  # /api/v1/stages/
promotions = Router(tags=["releases"])  # /api/v1/promotions/
rollbacks = Router(tags=["releases"])  # /api/v1/rollbacks/
# Registered by their dotted paths in the app's ready() (portal.registry.api_router).

# --- Schemas ---------------------------------------------------------------------------------------------------------


class HeldOut(Schema):
    definition: str = Field(..., description="team/name")
    digest: str
    build: int | None
    applied_at: datetime
    pinned: bool = Field(..., description="Held since a rollback: only a roll-forward moves the stage on.")


class StageOut(Schema):
    id: int
    team: str
    name: str
    position: int
    description: str
    required_approvals: int
    rollback_required_approvals: int
    exclude_requester: bool
    exclude_author: bool
    exclude_build_triggerer: bool
    require_previous_stage: bool
    require_boot_test: bool
    holds: list[HeldOut]
    url: str


class ApprovalOut(Schema):
    approver: str
    decision: str
    digest: str
    comment: str
    created_at: datetime
    superseded: bool


class PromotionOut(Schema):
    id: int
    kind: PromotionKind
    status: PromotionStatus
    status_note: str
    team: str
    definition: str = Field(..., description="team/name")
    definition_id: int
    build: int
    build_number: int
    digest: str
    stage: str
    stage_id: int
    source_stage: str | None
    previous_digest: str
    reason: str
    requested_by: str
    emergency: bool
    approvals_needed: int
    approvals: list[ApprovalOut]
    created_at: datetime
    decided_at: datetime | None
    applied_at: datetime | None
    run: int | None = Field(None, description="The run that applies it (its log: /ws/runs/<run>/, /api/v1/runs/<run>/log/).")
    url: str


class PromotionIn(Body):
    definition: int | str = Field(..., description="The image definition: id, team/name or name.")
    stage: int | str = Field(..., description="The target stage: id, or name in the definition's team.")
    build: int | None = Field(None, description="The build's id; or give `digest`.")
    digest: str | None = Field(None, max_length=80, description="sha256:... of one of the definition's builds.")
    reason: str = Field(..., min_length=1, max_length=2000)
    emergency: bool = False
    emergency_reason: str = Field("", max_length=500)
    roll_forward: bool = False
    confirm: str = Field("", max_length=100, description="The stage's name, to move a stage that needs no approval "
                                                          "back to an older build (it applies at once).")


class RollbackIn(Body):
    definition: int | str
    stage: int | str
    digest: str = Field(..., min_length=1, max_length=80, description="A digest the stage held before.")
    reason: str = Field(..., min_length=1, max_length=2000)


class DecisionIn(Body):
    digest: str = Field(..., min_length=1, max_length=80,
                        description="The digest you looked at: a request for another digest is refused (409).")
    comment: str = Field("", max_length=2000, description="Required to reject: the requester reads it.")
    confirm: str = Field("", max_length=40, description="The stage's name, to approve a request that moves it back.")


# --- Reading ---------------------------------------------------------------------------------------------------------


def _held(stages):
    """{stage id: [HeldOut]} for `stages`: what each holds per definition, in one pass over the current entries."""
    stages = list(stages)
    definitions = {d for s in stages for d in s.team.image_definitions.all()}
    entries = gate.current_entries(stages, definitions) if stages and definitions else {}
    out = {s.pk: [] for s in stages}
    for (stage_id, _), entry in sorted(entries.items(), key=lambda item: item[1].definition.name):
        out[stage_id].append({"definition": f"{entry.definition.team.slug}/{entry.definition.name}",
                              "digest": entry.digest, "build": entry.build_id, "applied_at": entry.applied_at,
                              "pinned": entry.pins})
    return out


def stage_out(request, stage, held):
    return {"id": stage.pk, "team": stage.team.slug, "name": stage.name, "position": stage.position,
            "description": stage.description, "required_approvals": stage.required_approvals,
            "rollback_required_approvals": stage.rollback_required_approvals,
            "exclude_requester": stage.exclude_requester, "exclude_author": stage.exclude_author,
            "exclude_build_triggerer": stage.exclude_build_triggerer,
            "require_previous_stage": stage.require_previous_stage, "require_boot_test": stage.require_boot_test,
            "holds": held.get(stage.pk, []), "url": request.build_absolute_uri(stage.get_absolute_url())}


def promotion_out(request, promotion):
    definition = promotion.definition
    return {
        "id": promotion.pk, "kind": promotion.kind, "status": promotion.status, "status_note": promotion.status_note,
        "team": definition.team.slug, "definition": f"{definition.team.slug}/{definition.name}",
        "definition_id": definition.pk, "build": promotion.build_id, "build_number": promotion.build.number,
        "digest": promotion.digest, "stage": promotion.target_stage.name, "stage_id": promotion.target_stage_id,
        "source_stage": promotion.source_stage.name if promotion.source_stage_id else None,
        "previous_digest": promotion.previous_digest, "reason": promotion.reason,
        "requested_by": promotion.requested_by_name, "emergency": promotion.emergency,
        "approvals_needed": promotion.required_approvals(),
        "approvals": [{"approver": a.approver_name, "decision": a.decision, "digest": a.digest, "comment": a.comment,
                       "created_at": a.created_at, "superseded": a.superseded_at is not None}
                      for a in promotion.approvals.all()],
        "created_at": promotion.created_at, "decided_at": promotion.decided_at, "applied_at": promotion.applied_at,
        "run": promotion.run_id, "url": request.build_absolute_uri(promotion.get_absolute_url()),
    }


@stages.get("", response=page_of(StageOut), summary="Stages of the caller's teams, and what each holds")
def stage_list(request, team: str | None = None, name: str | None = None, cursor: str | None = None,
               limit: int = PAGE_LIMIT_DEFAULT):
    queryset = Stage.objects.filter(team__in=Team.objects.visible_to(request.user)).select_related("team")
    if team:
        queryset = queryset.filter(team__slug=team)
    if name:
        queryset = queryset.filter(name=name)
    page = paginate(queryset.prefetch_related("team__image_definitions"), cursor=cursor, limit=limit)
    held = _held(page["items"])
    page["items"] = [stage_out(request, stage, held) for stage in page["items"]]
    return page


@stages.get("{stage_id}/", response=StageOut, summary="A stage, its policy and what it holds")
def stage_detail(request, stage_id: int):
    stage = get_stage_for_user(request.user, stage_id)
    return stage_out(request, stage, _held([stage]))


def _promotions():
    return Promotion.objects.with_related().select_related("target_stage__team").prefetch_related("approvals")


@promotions.get("", response=page_of(PromotionOut), summary="Promotion requests (the UI's filters)")
def promotion_list(request, team: str | None = None, status: PromotionStatus | None = None, stage: str | None = None,
                   kind: PromotionKind | None = None, definition: str | None = None, q: str = "",
                   waiting_for_me: bool = False, cursor: str | None = None, limit: int = PAGE_LIMIT_DEFAULT):
    queryset = (Promotion.objects.waiting_for(request.user) if waiting_for_me
                else Promotion.objects.visible_to(request.user))
    if team:
        queryset = queryset.filter(target_stage__team__slug=team)
    if status:
        queryset = queryset.filter(status=status)
    if stage:
        queryset = queryset.filter(target_stage__name=stage)
    if kind:
        queryset = queryset.filter(kind=kind)
    if definition:
        queryset = queryset.filter(definition=get_definition_by_reference_for_user(request.user, definition))
    if q.strip():
        text = q.strip()
        match = (Q(definition__name__icontains=text) | Q(digest__icontains=text) | Q(reason__icontains=text)
                 | Q(requested_by_name__icontains=text))
        if text.lstrip("#").isdecimal():
            match |= Q(pk=int(text.lstrip("#")))
        queryset = queryset.filter(match)
    queryset = queryset.select_related("definition", "definition__team", "build", "target_stage", "source_stage") \
        .prefetch_related("approvals")
    return paginate(queryset, cursor=cursor, limit=limit, key=lambda p: promotion_out(request, p))


@promotions.get("{promotion_id}/", response=PromotionOut, summary="A promotion request and its approvals")
def promotion_detail(request, promotion_id: int):
    return promotion_out(request, get_promotion_for_user(request.user, promotion_id))


# --- Requesting and deciding -----------------------------------------------------------------------------------------


def _stage_of(definition, value):
    stages = Stage.objects.filter(team=definition.team).select_related("team")
    if isinstance(value, int) or (isinstance(value, str) and value.isdecimal() and value.isascii()):
        stage = stages.filter(pk=int(value)).first()
    else:
        stage = stages.filter(name=str(value)).first() if "\x00" not in str(value) else None
    if stage is None:
        raise Problem(400, f"body.stage: {definition.team} has no stage {value!r}", slug="invalid",
                      errors=[{"field": "body.stage", "message": f"{definition.team} has no stage {value!r}"}])
    return stage


def _definition(request, value):
    try:
        return get_definition_by_reference_for_user(request.user, value, action=Action.DEVELOP)
    except Http404:
        raise Problem(400, f"body.definition: no image definition {value!r} in your teams", slug="invalid",
                      errors=[{"field": "body.definition", "message": f"no image definition {value!r} in your teams"}]) \
            from None


def _state_refused(exc):
    """A PromotionStateError (already decided, another digest, applying ...): 409, nothing recorded."""
    return Problem(409, " ".join(exc.messages), slug="conflict")


@promotions.post("", response={201: PromotionOut}, auth=token_auth(Scope.PROMOTE),
             summary="Ask for a build's digest to go to a stage")
def promotion_create(request, payload: PromotionIn):
    definition = _definition(request, payload.definition)
    stage = _stage_of(definition, payload.stage)
    if (payload.build is None) == (payload.digest is None):
        raise Problem(400, "body.build: give the image as `build` (its id) or as `digest`, one of them", slug="invalid",
                      errors=[{"field": "body.build", "message": "give `build` or `digest`, one of them"}])
    build = None
    if payload.build is not None:
        build = Build.objects.visible_to(request.user).with_related().filter(pk=payload.build).first()
        if build is None:
            raise Problem(400, f"body.build: no build {payload.build} in your teams", slug="invalid",
                          errors=[{"field": "body.build", "message": f"no build {payload.build} in your teams"}])
    try:
        promotion = services.promotion_request(
            definition=definition, target_stage=stage, user=request.user, reason=payload.reason, build=build,
            digest=payload.digest or "", emergency=payload.emergency, emergency_reason=payload.emergency_reason,
            roll_forward=payload.roll_forward, confirm=payload.confirm, request=request)
    except services.PromotionStateError as exc:
        raise _state_refused(exc) from None
    return Status(201, promotion_out(request, _promotions().get(pk=promotion.pk)))


@rollbacks.post("", response={201: PromotionOut}, auth=token_auth(Scope.PROMOTE),
             summary="Ask for a stage to go back to a digest it held before (under the stage's rollback policy)")
def rollback_create(request, payload: RollbackIn):
    definition = _definition(request, payload.definition)
    stage = _stage_of(definition, payload.stage)
    get_stage_for_user(request.user, stage.pk, action=Action.DEVELOP)
    promotion = services.promotion_rollback_request(stage=stage, definition=definition, digest=payload.digest.strip(),
                                                    user=request.user, reason=payload.reason, request=request)
    return Status(201, promotion_out(request, _promotions().get(pk=promotion.pk)))


def _decide(request, promotion_id, decide, payload, **extra):
    promotion = get_promotion_for_user(request.user, promotion_id)
    try:
        decide(promotion=promotion, user=request.user, digest=payload.digest, comment=payload.comment, request=request,
               **extra)
    except services.PromotionStateError as exc:
        raise _state_refused(exc) from None
    return promotion_out(request, _promotions().get(pk=promotion.pk))


@promotions.post("{promotion_id}/approve/", response=PromotionOut, auth=token_auth(Scope.APPROVE),
             summary="Approve as the token's user (the stage's gate and self-approval rules apply)")
def promotion_approve(request, promotion_id: int, payload: DecisionIn):
    return _decide(request, promotion_id, services.promotion_approve, payload, confirm=payload.confirm)


@promotions.post("{promotion_id}/reject/", response=PromotionOut, auth=token_auth(Scope.APPROVE),
             summary="Reject as the token's user, with a comment")
def promotion_reject(request, promotion_id: int, payload: DecisionIn):
    if not payload.comment.strip():
        raise Problem(400, "body.comment: say why you reject it: the requester reads this", slug="invalid",
                      errors=[{"field": "body.comment", "message": "say why you reject it: the requester reads this"}])
    return _decide(request, promotion_id, services.promotion_reject, payload)


@promotions.post("{promotion_id}/withdraw/", response=PromotionOut, auth=token_auth(Scope.PROMOTE),
             summary="Take back a request that has not started applying (its requester or a team admin)")
def promotion_withdraw(request, promotion_id: int):
    promotion = get_promotion_for_user(request.user, promotion_id)
    try:
        services.promotion_withdraw(promotion=promotion, user=request.user, request=request)
    except services.PromotionStateError as exc:
        raise _state_refused(exc) from None
    return promotion_out(request, _promotions().get(pk=promotion.pk))
