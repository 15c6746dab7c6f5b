"""Promotions between stages: the stage policy, the gate, the stage history and rollbacks (docs/promotions.md).

Every state change of promotions, approvals, stages' policies, freezes, change windows and approver groups is written
once here; views, tasks and management commands call these functions. What a worker does to apply a promotion (skopeo
copy by digest, verify, record) is in `builds.promotion_apply`; notifications are in `builds.notifications`.

The gate, in short: a request names a digest built by the definition and a target stage of the same team. People who
may approve (the approver role, or members of the stage's approver groups; never the requester, the revision's author
or whoever started the build, when the policy says so) approve or reject the exact digest they saw. The approval that
completes the quorum is counted with the promotion row locked (`select_for_update`), so concurrent approvals start the
application exactly once. A freeze or a closed change window holds an approved promotion until the stage takes changes,
unless it is an emergency override, which needs extra approvals.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.access import can, check_team_action, second_factor_refusal
from portal.models import ROLE_ACTIONS, Action, Membership, Run, RunKind, RunStatus, Team, User
from portal.services import audit, run_create, run_enqueue

from .models import (
    Approval,
    ApprovalDecision,
    ApproverGroup,
    Build,
    ChangeWindow,
    ImageDefinition,
    Promotion,
    PromotionKind,
    PromotionStatus,
    Stage,
    StageFreeze,
    StageGroupRequirement,
    StageHistory,
)
from .promotion_apply import fail_promotion
from .tasks import promotion_apply

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
log = logging.getLogger(__name__)


class PromotionStateError(ValidationError):
    """The promotion is not in a state that allows this (already decided, applying, applied...): HTTP 409."""


# --- Who may approve -------------------------------------------------------------------------------------------------


def _stage_groups(stage: Stage) -> list[StageGroupRequirement]:
    cached = getattr(stage, "_group_requirements_cache", None)
    if cached is None:
        cached = list(stage.group_requirements.select_related("group").prefetch_related("group__members"))
        stage._group_requirements_cache = cached
    return cached


def user_groups_for_stage(stage: Stage, user) -> list[str]:
    """Names of the stage's approver groups `user` belongs to."""
    return [req.group.name for req in _stage_groups(stage) if any(m.pk == user.pk for m in req.group.members.all())]


def approval_refusal(promotion: Promotion, user) -> str:
    """Why `user` may not approve or reject `promotion`, or "" when they may. The same rules as the inbox's query
    (`PromotionQuerySet.waiting_for`)."""
    stage = promotion.target_stage
    if not user.is_authenticated or not user.is_active:
        return "Log in to decide on promotions."
    second_factor = second_factor_refusal(user, stage.team)  # also for approver groups, whatever the role
    if second_factor:
        return second_factor
    groups = _stage_groups(stage)
    if groups:
        if not user_groups_for_stage(stage, user):
            names = " or ".join(req.group.name for req in groups)
            return f"Only members of {names} may approve promotions to {stage.name}."
        if not can(user, stage.team, Action.VIEW):
            return f"You are in an approver group of {stage.name} but not a member of {stage.team}."
    elif not can(user, stage.team, Action.APPROVE):
        return f"Your role in {stage.team} does not allow you to sign off promotions."
    build = promotion.build
    if stage.exclude_requester and promotion.requested_by_id == user.pk:
        return "You asked for this promotion; someone else must approve it."
    if stage.exclude_author and build.revision.author_id == user.pk:
        return (f"You wrote revision {build.revision.number} of {promotion.definition.name}, which this image was built "
                "from; someone else must approve it.")
    if stage.exclude_build_triggerer and build.run.started_by_id == user.pk:
        return f"You started build {build.number}, which made this image; someone else must approve it."
    return ""


def eligible_approvers(promotion: Promotion) -> list[User]:
    """Everyone who may approve `promotion` now (for the "approval requested" notification and the card)."""
    stage = promotion.target_stage
    groups = _stage_groups(stage)
    if groups:
        candidates = User.objects.filter(approver_groups__stage_requirements__stage=stage)
    else:
        roles = [role for role, actions in ROLE_ACTIONS.items() if Action.APPROVE in actions]
        candidates = User.objects.filter(memberships__team=stage.team, memberships__role__in=roles)
    candidates = candidates.filter(is_active=True).distinct().order_by("username")
    return [user for user in candidates if not approval_refusal(promotion, user)]


# --- The quorum ------------------------------------------------------------------------------------------------------


@dataclass
class GroupProgress:
    name: str
    minimum: int
    approvers: list[str] = field(default_factory=list)

    @property
    def met(self):
        return len(self.approvers) >= self.minimum


@dataclass
class Quorum:
    needed: int
    counted: list[Approval]
    expired: list[Approval]
    not_counted: list[tuple[Approval, str]]  # approvals that no longer count, and why
    groups: list[GroupProgress]

    @property
    def met(self):
        return len(self.counted) >= self.needed and all(group.met for group in self.groups)

    @property
    def missing(self):
        return max(self.needed - len(self.counted), 0)

    def summary(self):
        text = f"{len(self.counted)} of {self.needed} approval{'s' if self.needed != 1 else ''}"
        if self.groups:
            text += " (" + ", ".join(f"{g.name}: {len(g.approvers)}/{g.minimum}" for g in self.groups) + ")"
        return text


def _assign_groups(approvals: list[Approval], requirements: list[StageGroupRequirement], members: dict[int, set[int]]):
    """Assign each approver to at most one group so that as many group minimums as possible are met (a bipartite
    matching of approvers to group "seats"; one person never fills two seats)."""
    seats = [(index, req) for index, req in enumerate(requirements) for _ in range(req.minimum)]
    seat_of = {}  # seat number -> approval
    def try_assign(approval, seen):
        for number, (_, req) in enumerate(seats):
            if number in seen or approval.approver_id not in members[req.group_id]:
                continue
            seen.add(number)
            if number not in seat_of or try_assign(seat_of[number], seen):
                seat_of[number] = approval
                return True
        return False
    for approval in approvals:
        try_assign(approval, set())
    progress = [GroupProgress(name=req.group.name, minimum=req.minimum) for req in requirements]
    for number, approval in sorted(seat_of.items()):
        progress[seats[number][0]].approvers.append(approval.approver_name)
    return progress


def quorum(promotion: Promotion, now: datetime | None = None) -> Quorum:
    """Which approvals count for `promotion` now: approving, bound to its digest, not expired, and given by someone
    who may still approve it (their role or group may have changed since)."""
    now = now or timezone.now()
    stage = promotion.target_stage
    live = [a for a in promotion.approvals.filter(superseded_at__isnull=True, decision=ApprovalDecision.APPROVE,
                                                  digest=promotion.digest).select_related("approver")]
    counted, expired, not_counted = [], [], []
    for approval in live:
        if approval.is_expired(stage, now):
            expired.append(approval)
            continue
        why = "their account is gone" if approval.approver is None else approval_refusal(promotion, approval.approver)
        if why:
            not_counted.append((approval, why))
        else:
            counted.append(approval)
    requirements = [] if promotion.is_rollback else _stage_groups(stage)
    members = {req.group_id: {m.pk for m in req.group.members.all()} for req in requirements}
    groups = _assign_groups(counted, requirements, members) if requirements else []
    return Quorum(needed=promotion.required_approvals(), counted=counted, expired=expired, not_counted=not_counted,
                  groups=groups)


# --- Stage state -----------------------------------------------------------------------------------------------------


def stage_current(stage: Stage, definition: ImageDefinition) -> StageHistory | None:
    return StageHistory.objects.current(stage, definition)


def current_entries(stages, definitions) -> dict[tuple[int, int], StageHistory]:
    """{(stage id, definition id): the entry for what the stage holds now}, one query for the ids and one for the rows,
    however long the history is."""
    from django.db.models import OuterRef, Subquery

    definition_ids = [d.pk if hasattr(d, "pk") else d for d in definitions]
    ids = []
    for stage in stages:
        newest = (StageHistory.objects.filter(stage=stage, definition=OuterRef("pk"))
                  .order_by("-applied_at", "-id").values("pk")[:1])
        ids += [pk for pk in ImageDefinition.objects.filter(pk__in=definition_ids)
                .annotate(entry=Subquery(newest)).values_list("entry", flat=True) if pk]
    entries = StageHistory.objects.filter(pk__in=ids).select_related("build", "promotion")
    return {(e.stage_id, e.definition_id): e for e in entries}


def stage_board(team: Team, definitions) -> list[dict]:
    """For each definition, what each of the team's stages holds: [{definition, cells: [(stage, entry)]}]."""
    stages = list(team.stages.all())
    definitions = list(definitions)
    latest = current_entries(stages, definitions)
    return [{"definition": d, "cells": [(s, latest.get((s.pk, d.pk))) for s in stages]} for d in definitions]


# --- Requests --------------------------------------------------------------------------------------------------------


def _resolve_build(definition: ImageDefinition, *, build: Build | None, digest: str) -> Build:
    if build is not None:
        if build.definition_id != definition.pk:
            raise ValidationError(f"{build} was not built by {definition}; pick one of its own builds.")
        if not build.succeeded:
            raise ValidationError(f"{build} did not succeed ({build.get_status_display().lower()}); only a pushed "
                                  "image can be promoted.")
        return build
    digest = (digest or "").strip().lower()
    if not DIGEST_RE.match(digest):
        raise ValidationError("Give the image digest as sha256: followed by 64 hexadecimal characters.")
    found = Build.objects.with_related().filter(definition=definition, digest=digest).succeeded().order_by("-number").first()
    if found is None:
        raise ValidationError(f"{digest[:19]}… was never built by {definition}: only digests of its own successful builds "
                              "can be promoted.")
    return found


def promotion_request(
    *,
    definition: ImageDefinition,
    target_stage: Stage,
    user: User,
    reason: str,
    build: Build | None = None,
    digest: str = "",
    emergency: bool = False,
    emergency_reason: str = "",
    roll_forward: bool = False,
    request=None,
) -> Promotion:
    """Ask for `build`'s digest (or `digest`, which must be one of the definition's builds) to go to `target_stage`.

    Refused with the reason (ValidationError) when the stage belongs to another team, the digest was never built by the
    definition, the stage policy wants it in the previous stage first, the stage is pinned after a rollback (unless
    `roll_forward`), the stage holds it already, or the same request is open. With no approvals needed it starts
    applying at once.
    """
    check_team_action(user, definition.team, Action.DEVELOP)
    if target_stage.team_id != definition.team_id:
        raise ValidationError(f"Stage {target_stage.name} belongs to team {target_stage.team}; {definition} moves only "
                              f"through the stages of {definition.team}.")
    build = _resolve_build(definition, build=build, digest=digest)
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("Say why this image should go to " + target_stage.name + ".")
    if emergency and not (emergency_reason or "").strip():
        raise ValidationError("An emergency override needs its own reason: what cannot wait for the change window?")
    with transaction.atomic():
        stage = Stage.objects.select_for_update().select_related("team").get(pk=target_stage.pk)
        current = stage_current(stage, definition)
        if current is not None and current.digest == build.digest:
            raise ValidationError(f"{stage.name} already holds {build.short_digest} for {definition.name}.")
        if current is not None and current.pins and not roll_forward:
            raise ValidationError(
                f"{stage.name} is pinned to {current.short_digest} since a rollback; tick “roll forward” to move it on "
                "explicitly.")
        previous = stage.previous_stage()
        if previous is not None and stage.require_previous_stage and not StageHistory.objects.filter(
                stage=previous, definition=definition, digest=build.digest).exists():
            raise ValidationError(f"{build.short_digest} has not been in {previous.name} yet; {stage.name} takes only "
                                  f"images that passed {previous.name}. Promote it to {previous.name} first.")
        _refuse_duplicate(stage, definition, build.digest)
        promotion = Promotion.objects.create(
            definition=definition, build=build, digest=build.digest, kind=PromotionKind.PROMOTE, source_stage=previous,
            target_stage=stage, reason=reason, requested_by=user, requested_by_name=user.username,
            emergency=emergency, emergency_reason=(emergency_reason or "").strip() if emergency else "",
            roll_forward=roll_forward and current is not None and current.pins,
            previous_digest=current.digest if current else "",
        )
        _audit_request(promotion, user, request)
        _after_request(promotion, user, request)
    promotion.refresh_from_db()  # what happened once it committed (e.g. the application could not be queued)
    return promotion


def promotion_rollback_request(*, stage: Stage, definition: ImageDefinition, digest: str, user: User, reason: str,
                               request=None) -> Promotion:
    """Ask for `stage` to go back to `digest`, one it held before, under the stage's rollback policy. Once applied, the
    stage stays pinned until a promotion explicitly rolls it forward."""
    check_team_action(user, definition.team, Action.DEVELOP)
    if stage.team_id != definition.team_id:
        raise ValidationError(f"Stage {stage.name} belongs to team {stage.team}, not {definition.team}.")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("Say why " + stage.name + " must go back.")
    with transaction.atomic():
        stage = Stage.objects.select_for_update().select_related("team").get(pk=stage.pk)
        current = stage_current(stage, definition)
        if current is None:
            raise ValidationError(f"{stage.name} has never held an image of {definition.name}: nothing to roll back.")
        if current.digest == digest:
            raise ValidationError(f"{stage.name} holds {current.short_digest} already.")
        earlier = StageHistory.objects.filter(stage=stage, definition=definition, digest=digest).first()
        if earlier is None:
            raise ValidationError(f"{digest[:19]}… was never in {stage.name}; a rollback goes back to a digest the stage "
                                  "held before.")
        build = earlier.build or Build.objects.filter(definition=definition, digest=digest).order_by("-number").first()
        if build is None:
            raise ValidationError(f"The build of {digest[:19]}… is gone; promote another digest instead.")
        _refuse_duplicate(stage, definition, digest)
        promotion = Promotion.objects.create(
            definition=definition, build=build, digest=digest, kind=PromotionKind.ROLLBACK, source_stage=None,
            target_stage=stage, reason=reason, requested_by=user, requested_by_name=user.username,
            previous_digest=current.digest,
        )
        _audit_request(promotion, user, request)
        _after_request(promotion, user, request)
    promotion.refresh_from_db()  # what happened once it committed (e.g. the application could not be queued)
    return promotion


def _refuse_duplicate(stage, definition, digest):
    open_one = Promotion.objects.filter(
        target_stage=stage, definition=definition, digest=digest,
        status__in=[PromotionStatus.PENDING, PromotionStatus.APPROVED, PromotionStatus.APPLYING],
    ).first()
    if open_one is not None:
        raise ValidationError(f"Request #{open_one.pk} already asks for this ({open_one.get_status_display().lower()}).")


def _audit_request(promotion, user, request):
    what = "rollback" if promotion.is_rollback else "promotion"
    audit(action="promotion.request", summary=f"asked for {what} of {promotion.definition} {promotion.short_digest} to "
          f"{promotion.target_stage.name}: {promotion.reason}", actor=user, team=promotion.team, obj=promotion,
          request=request, detail=_detail(promotion))
    if promotion.emergency:
        audit(action="promotion.override_request", summary=f"asked for an emergency override for #{promotion.pk}: "
              f"{promotion.emergency_reason}", actor=user, team=promotion.team, obj=promotion, request=request,
              detail=_detail(promotion))


def _after_request(promotion, user, request):
    from . import notifications

    started = _advance(promotion, actor=user, request=request)
    if promotion.status == PromotionStatus.PENDING:
        notifications.notify(event=notifications.NotificationEvent.APPROVAL_REQUESTED, team=promotion.team,
                             promotion=promotion, actor=user)
    return started


def _detail(promotion, **extra):
    return {
        "definition": str(promotion.definition), "digest": promotion.digest, "stage": promotion.target_stage.name,
        "kind": promotion.kind, "emergency": promotion.emergency, "previous_digest": promotion.previous_digest, **extra,
    }


# --- Decisions -------------------------------------------------------------------------------------------------------


def promotion_approve(*, promotion: Promotion, user: User, digest: str, comment: str = "", request=None) -> Promotion:
    """Approve `promotion`'s digest. `digest` is the one the approver saw: a different one is refused.

    Counted with the promotion row locked: the approval that completes the quorum starts the application, once.
    """
    return _decide(promotion=promotion, user=user, digest=digest, comment=comment, decision=ApprovalDecision.APPROVE,
                   request=request)


def promotion_reject(*, promotion: Promotion, user: User, digest: str, comment: str, request=None) -> Promotion:
    """Reject `promotion` with a comment: one rejection ends the request."""
    if not (comment or "").strip():
        raise ValidationError("Say why you reject it: the requester reads this.")
    return _decide(promotion=promotion, user=user, digest=digest, comment=comment, decision=ApprovalDecision.REJECT,
                   request=request)


def _locked(promotion):
    """The promotion row, locked until the end of the transaction (PostgreSQL; SQLite serialises writers anyway)."""
    return Promotion.objects.select_for_update(of=("self",)).select_related(
        "definition", "definition__team", "build", "build__revision", "build__run", "target_stage",
        "target_stage__team", "source_stage", "requested_by",
    ).get(pk=promotion.pk)


def _decide(*, promotion, user, digest, comment, decision, request):
    from . import notifications

    check_team_action(user, promotion.target_stage.team, Action.VIEW)
    with transaction.atomic():
        locked = _locked(promotion)
        refusal = approval_refusal(locked, user)
        if refusal:
            raise PermissionDenied(refusal)
        if locked.status != PromotionStatus.PENDING:
            raise PromotionStateError(f"Request #{locked.pk} is {locked.get_status_display().lower()} already; "
                                      "nothing was recorded.")
        if (digest or "").strip() != locked.digest:
            raise PromotionStateError(f"You looked at {(digest or '(no digest)')[:19]}…, but request #{locked.pk} is for "
                                      f"{locked.digest[:19]}…; reload the page and look again.")
        now = timezone.now()
        mine = locked.approvals.filter(approver=user, superseded_at__isnull=True).first()
        if mine is not None:
            if mine.decision == ApprovalDecision.APPROVE and mine.is_expired(locked.target_stage, now):
                Approval.objects.filter(pk=mine.pk).update(superseded_at=now)
            else:
                raise PromotionStateError(f"You already {mine.get_decision_display().lower()} this request.")
        Approval.objects.create(
            promotion=locked, approver=user, approver_name=user.username, decision=decision, digest=locked.digest,
            comment=(comment or "").strip(), groups=user_groups_for_stage(locked.target_stage, user), created_at=now,
        )
        verb = "approved" if decision == ApprovalDecision.APPROVE else "rejected"
        audit(action=f"promotion.{'approve' if decision == ApprovalDecision.APPROVE else 'reject'}",
              summary=f"{verb} #{locked.pk} ({locked.definition} {locked.short_digest} to {locked.target_stage.name})"
                      + (f": {comment.strip()}" if comment and comment.strip() else ""),
              actor=user, team=locked.team, obj=locked, request=request, detail=_detail(locked, comment=comment or ""))
        if decision == ApprovalDecision.REJECT:
            _set_status(locked, PromotionStatus.REJECTED, note=f"Rejected by {user.username}: {comment.strip()}",
                        decided_at=now)
            notifications.notify(event=notifications.NotificationEvent.DECIDED, team=locked.team, promotion=locked,
                                 actor=user)
        else:
            _advance(locked, actor=user, request=request, now=now)
    promotion.refresh_from_db()
    return promotion


def promotion_withdraw(*, promotion: Promotion, user: User, request=None) -> Promotion:
    """The requester (or a team admin) takes back a request that has not started applying."""
    check_team_action(user, promotion.target_stage.team, Action.VIEW)
    with transaction.atomic():
        locked = _locked(promotion)
        if locked.requested_by_id != user.pk and not can(user, locked.team, Action.ADMIN):
            raise PermissionDenied("Only the requester or a team admin may withdraw a request.")
        if locked.status not in (PromotionStatus.PENDING, PromotionStatus.APPROVED, PromotionStatus.FAILED):
            raise PromotionStateError(f"Request #{locked.pk} is {locked.get_status_display().lower()}; it can no longer "
                                      "be withdrawn.")
        _set_status(locked, PromotionStatus.WITHDRAWN, note=f"Withdrawn by {user.username}.", decided_at=timezone.now())
        audit(action="promotion.withdraw", summary=f"withdrew #{locked.pk} ({locked.definition} to "
              f"{locked.target_stage.name})", actor=user, team=locked.team, obj=locked, request=request,
              detail=_detail(locked))
    promotion.refresh_from_db()
    return promotion


def promotion_retry(*, promotion: Promotion, user: User, request=None) -> Promotion:
    """Apply a failed promotion again. Its approvals stand while they still count (they were for this digest): ones
    that expired meanwhile, or whose givers may no longer approve, do not, and then the request goes back to pending
    and asks the approvers again. Checks again that the stage takes changes and has not moved on meanwhile."""
    check_team_action(user, promotion.target_stage.team, Action.DEVELOP)
    with transaction.atomic():
        locked = _locked(promotion)
        if locked.status != PromotionStatus.FAILED:
            raise PromotionStateError(f"Only a failed promotion can be retried; #{locked.pk} is "
                                      f"{locked.get_status_display().lower()}.")
        current = stage_current(locked.target_stage, locked.definition)
        if current is not None and current.digest == locked.digest:
            raise ValidationError(f"{locked.target_stage.name} holds {locked.short_digest} already.")
        if current is not None and current.pins and not locked.is_rollback and not locked.roll_forward:
            raise ValidationError(f"{locked.target_stage.name} was rolled back meanwhile and is pinned; ask again with "
                                  "“roll forward”.")
        audit(action="promotion.retry", summary=f"retried #{locked.pk} ({locked.definition} to "
              f"{locked.target_stage.name})", actor=user, team=locked.team, obj=locked, request=request,
              detail=_detail(locked))
        now = timezone.now()
        result = quorum(locked, now)
        if result.met:
            _start_or_wait(locked, actor=user, request=request, now=now)
        else:
            from . import notifications

            _set_status(locked, PromotionStatus.PENDING, note=f"Retried after its approvals stopped counting "
                        f"({result.summary()}): it needs them again before it is applied.")
            notifications.notify(event=notifications.NotificationEvent.APPROVAL_REQUESTED, team=locked.team,
                                 promotion=locked, actor=user)
    promotion.refresh_from_db()
    return promotion


# --- From quorum to application --------------------------------------------------------------------------------------


def _set_status(promotion, status, *, note="", **changes):
    promotion.status = status
    promotion.status_note = note[:500]
    for name, value in changes.items():
        setattr(promotion, name, value)
    promotion.save(update_fields=["status", "status_note", "updated_at", *changes])


def _advance(promotion, *, actor=None, request=None, now=None):
    """With `promotion` locked (or just created): if its quorum is met, start applying it, or hold it until the stage
    takes changes. Returns the apply run, or None."""
    from . import notifications

    now = now or timezone.now()
    result = quorum(promotion, now)
    if not result.met:
        if promotion.status == PromotionStatus.APPROVED:  # approvals expired while it waited
            _set_status(promotion, PromotionStatus.PENDING,
                        note=f"Approvals expired while it waited: {result.summary()}.")
        return None
    decided_now = promotion.status == PromotionStatus.PENDING and result.needed > 0
    if promotion.status == PromotionStatus.PENDING:
        promotion.decided_at = now
    if decided_now:
        audit(action="promotion.approved", summary=f"#{promotion.pk} has its approvals ({result.summary()})",
              actor=actor, team=promotion.team, obj=promotion, request=request,
              detail=_detail(promotion, approvers=[a.approver_name for a in result.counted]))
    run = _start_or_wait(promotion, actor=actor, request=request, now=now)
    if decided_now:  # after the status moved on, so the notification says "applying" or "approved, waiting"
        notifications.notify(event=notifications.NotificationEvent.DECIDED, team=promotion.team, promotion=promotion,
                             actor=actor)
    return run


def _start_or_wait(promotion, *, actor, request, now):
    stage = promotion.target_stage
    blocked = "" if promotion.is_rollback else stage.blocked_reason(now)
    if blocked and not promotion.emergency:
        _set_status(promotion, PromotionStatus.APPROVED, note=f"Approved; waits because {blocked}.",
                    decided_at=promotion.decided_at or now)
        return None
    busy = Promotion.objects.filter(target_stage=stage, definition=promotion.definition,
                                    status=PromotionStatus.APPLYING).exclude(pk=promotion.pk).first()
    if busy is not None:
        _set_status(promotion, PromotionStatus.APPROVED, note=f"Approved; waits for #{busy.pk} to finish applying.",
                    decided_at=promotion.decided_at or now)
        return None
    title = (f"{'Roll back' if promotion.is_rollback else 'Promote'} {promotion.definition} {promotion.short_digest} "
             f"to {stage.name}")
    try:
        with transaction.atomic():  # the partial unique index allows one applying promotion per stage tag
            run = run_create(kind=RunKind.PROMOTION_APPLY, title=title, team=stage.team, started_by=actor,
                             trigger="button" if actor is not None else "system", subject=promotion)
            _set_status(promotion, PromotionStatus.APPLYING, note="", run=run, attempts=promotion.attempts + 1,
                        decided_at=promotion.decided_at or now)
    except IntegrityError:
        promotion.refresh_from_db()
        _set_status(promotion, PromotionStatus.APPROVED, note="Approved; waits for another promotion of this stage "
                                                              "to finish applying.")
        return None
    audit(action="promotion.apply_start", summary=f"started applying #{promotion.pk}: {title}", actor=actor,
          team=stage.team, obj=promotion, request=request, detail=_detail(promotion, run=run.pk))
    if promotion.emergency and blocked:
        audit(action="promotion.override_used", summary=f"emergency override for #{promotion.pk}: {blocked}; "
              f"{promotion.emergency_reason}", actor=actor, team=stage.team, obj=promotion, request=request,
              detail=_detail(promotion, blocked=blocked))
    transaction.on_commit(lambda: _enqueue_apply(run))
    return run


def _enqueue_apply(run):
    """Hand the application to a worker (`run_enqueue`). If the broker cannot take it, the run fails at once with the
    reason and so does the promotion (a Retry applies it once the broker answers), rather than staying "applying"
    until the reaper gives up on its run."""
    if not run_enqueue(promotion_apply, run.pk, run=run, what="it"):
        promotion_id = Promotion.objects.filter(run_id=run.pk).values_list("pk", flat=True).first()
        if promotion_id is not None:
            fail_promotion(promotion_id, run_id=run.pk, reason=f"{run.exit_reason} The stage tag was not touched.")


def promotions_apply_due(now=None) -> list[Promotion]:
    """Beat: apply approved promotions whose stage takes changes again (freeze over, window open, the other promotion
    done), send back to pending those whose approvals expired meanwhile, and fail promotions whose apply run ended
    without them (a reaped run: its worker died)."""
    now = now or timezone.now()
    started = []
    for promotion in Promotion.objects.filter(status=PromotionStatus.APPROVED).order_by("decided_at", "pk"):
        with transaction.atomic():
            locked = _locked(promotion)
            if locked.status == PromotionStatus.APPROVED and _advance(locked, now=now) is not None:
                started.append(locked)
    stuck = Promotion.objects.filter(status=PromotionStatus.APPLYING, run__status__in=[
        RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.SUCCEEDED])
    for promotion in stuck:
        fail_promotion(promotion.pk, run_id=promotion.run_id,
                       reason=Run.objects.filter(pk=promotion.run_id).values_list("exit_reason", flat=True).first()
                       or "Its apply run ended without recording a result.")
    return started


# --- Stage policy (team admins) --------------------------------------------------------------------------------------

POLICY_FIELDS = ("description", "required_approvals", "exclude_requester", "exclude_author", "exclude_build_triggerer",
                 "approval_ttl_hours", "require_previous_stage", "emergency_extra_approvals",
                 "rollback_required_approvals", "window_timezone")


def stage_update_policy(*, stage: Stage, user: User, groups: dict[ApproverGroup, int] | None = None, request=None,
                        **changes) -> Stage:
    """Change a stage's policy fields and, if `groups` is given, its group requirements ({group: minimum})."""
    check_team_action(user, stage.team, Action.ADMIN)
    unknown = set(changes) - set(POLICY_FIELDS)
    if unknown:
        raise ValueError(f"not policy fields: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        before = {name: getattr(stage, name) for name in changes}
        for name, value in changes.items():
            setattr(stage, name, value)
        stage.full_clean()
        stage.save()
        group_text = None
        if groups is not None:
            for group in groups:
                if group.team_id != stage.team_id:
                    raise ValidationError(f"Approver group {group} belongs to another team.")
            stage.group_requirements.exclude(group__in=[g for g, n in groups.items() if n]).delete()
            for group, minimum in groups.items():
                if minimum:
                    StageGroupRequirement.objects.update_or_create(stage=stage, group=group,
                                                                   defaults={"minimum": minimum})
            group_text = {g.name: n for g, n in groups.items() if n}
        changed = {k: [before[k], v] for k, v in changes.items() if before[k] != v}
        audit(action="stage.policy", summary=f"changed the policy of {stage}", actor=user, team=stage.team, obj=stage,
              request=request, detail={"changed": changed, "groups": group_text})
    stage.__dict__.pop("_group_requirements_cache", None)
    return stage


def stage_freeze(*, stage: Stage, user: User, reason: str, ends_at=None, starts_at=None, request=None) -> StageFreeze:
    check_team_action(user, stage.team, Action.ADMIN)
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("Say why the stage is frozen: requesters and approvers read it.")
    starts_at = starts_at or timezone.now()
    if ends_at is not None and ends_at <= starts_at:
        raise ValidationError("A freeze must end after it starts.")
    with transaction.atomic():
        freeze = StageFreeze.objects.create(stage=stage, reason=reason[:300], starts_at=starts_at, ends_at=ends_at,
                                            created_by=user)
        until = f" until {ends_at:%Y-%m-%d %H:%M} UTC" if ends_at else " until lifted"
        audit(action="stage.freeze", summary=f"froze {stage}{until}: {reason}", actor=user, team=stage.team, obj=stage,
              request=request, detail={"freeze": freeze.pk, "ends_at": ends_at})
    return freeze


def stage_unfreeze(*, freeze: StageFreeze, user: User, request=None) -> StageFreeze:
    stage = freeze.stage
    check_team_action(user, stage.team, Action.ADMIN)
    with transaction.atomic():
        if StageFreeze.objects.filter(pk=freeze.pk, lifted_at__isnull=True).update(lifted_at=timezone.now(),
                                                                                     lifted_by=user) != 1:
            raise PromotionStateError("This freeze was lifted already.")
        audit(action="stage.unfreeze", summary=f"lifted the freeze of {stage}: {freeze.reason}", actor=user,
              team=stage.team, obj=stage, request=request, detail={"freeze": freeze.pk})
        transaction.on_commit(_apply_due_soon)
    freeze.refresh_from_db()
    return freeze


def _apply_due_soon():
    from .tasks import promotions_apply_due as task

    task.delay()


def change_window_add(*, stage: Stage, user: User, weekdays: list[int], starts, ends, request=None) -> ChangeWindow:
    check_team_action(user, stage.team, Action.ADMIN)
    window = ChangeWindow(stage=stage, weekdays=sorted(set(weekdays)), starts=starts, ends=ends)
    window.clean()
    with transaction.atomic():
        window.save()
        audit(action="stage.window_add", summary=f"added change window {window} to {stage}", actor=user, team=stage.team,
              obj=stage, request=request, detail={"window": str(window), "timezone": stage.window_timezone})
    return window


def change_window_remove(*, window: ChangeWindow, user: User, request=None):
    stage = window.stage
    check_team_action(user, stage.team, Action.ADMIN)
    with transaction.atomic():
        audit(action="stage.window_remove", summary=f"removed change window {window} from {stage}", actor=user,
              team=stage.team, obj=stage, request=request, detail={"window": str(window)})
        window.delete()


# --- Approver groups (team admins) -----------------------------------------------------------------------------------


def approver_group_save(*, team: Team, user: User, name: str, description: str = "", members=(),
                        group: ApproverGroup | None = None, request=None) -> ApproverGroup:
    """Create or change an approver group. Members must belong to the team."""
    check_team_action(user, team, Action.ADMIN)
    members = list(members)
    outsiders = [m.username for m in members if not Membership.objects.filter(team=team, user=m).exists()]
    if outsiders:
        raise ValidationError(f"Not members of {team}: {', '.join(outsiders)}. Add them to the team first.")
    name = (name or "").strip()
    if not name:
        raise ValidationError("Give the group a name, e.g. QA or Security.")
    if ApproverGroup.objects.filter(team=team, name__iexact=name).exclude(pk=getattr(group, "pk", None)).exists():
        raise ValidationError(f"{team} has a group called {name} already.")
    with transaction.atomic():
        created = group is None
        if created:
            group = ApproverGroup.objects.create(team=team, name=name, description=description)
        else:
            group.name, group.description = name, description
            group.save(update_fields=["name", "description"])
        group.members.set(members)
        audit(action="approver_group.create" if created else "approver_group.update",
              summary=f"{'created' if created else 'changed'} approver group {group.name} of {team}", actor=user,
              team=team, obj=group, request=request, detail={"members": sorted(m.username for m in members)})
    return group


def approver_group_delete(*, group: ApproverGroup, user: User, request=None):
    check_team_action(user, group.team, Action.ADMIN)
    with transaction.atomic():
        stages = [req.stage.name for req in group.stage_requirements.select_related("stage")]
        audit(action="approver_group.delete", summary=f"deleted approver group {group.name} of {group.team}"
              + (f" (required by {', '.join(stages)})" if stages else ""), actor=user, team=group.team, obj=group,
              request=request, detail={"stages": stages})
        group.delete()
