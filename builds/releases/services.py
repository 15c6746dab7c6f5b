"""Promotions between stages: requests, decisions, the stage history and rollbacks (docs/promotions.md).

Every state change of promotions, approvals, stages' policies, freezes, change windows and approver groups is written
once here or, for a stage's policy and approver groups, in `policy`; views, tasks and management commands call these
functions. Who may approve and whether the quorum is met are read in `gate`. What a worker does to apply a promotion
(skopeo copy by digest, verify, record) is in `apply`.

The gate, in short: a request names a digest built by the definition and a target stage of the same team. People who
may approve (the approver role, or members of the stage's approver groups; never the requester, the revision's author
or whoever started the build, when the policy says so) approve or reject the exact digest they saw. The approval that
completes the quorum is counted with the promotion row locked (`select_for_update`), so concurrent approvals start the
application exactly once. A freeze or a closed change window holds an approved promotion until the stage takes changes,
unless it is an emergency override, which needs extra approvals. Checks other features answer (`gate.check_verdicts`:
a stage that requires a boot test or a signature) refuse approvals while they are not passed, hold the application
while they run, and refuse it when they failed; one that fails already as the promotion is asked for (a digest without
the signature the stage requires) refuses the request itself.
"""

from __future__ import annotations

import logging
import re

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from builds.models import Build, ImageDefinition
from portal.access import can, check_team_action
from portal.formatting import short_digest
from portal.models import Action, Run, RunKind, RunStatus, User
from portal.services import audit, run_create, run_enqueue

from . import notifications, tasks
from .apply import fail_promotion
from .gate import (
    approval_refusal,
    check_refusal,
    check_verdicts,
    held_build,
    moves_back,
    quorum,
    request_refusal,
    stage_current,
    user_groups_for_stage,
)
from .models import (
    Approval,
    ApprovalDecision,
    Promotion,
    PromotionKind,
    PromotionStatus,
    Stage,
    StageHistory,
)

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
log = logging.getLogger(__name__)


class PromotionStateError(ValidationError):
    """The promotion is not in a state that allows this (already decided, applying, applied...): HTTP 409."""


class MoveBackUnconfirmed(ValidationError):
    """A request that would move a stage without approvals back, asked for without the stage's name typed."""


# --- Requests --------------------------------------------------------------------------------------------------------


def _resolve_build(definition: ImageDefinition, *, build: Build | None, digest: str) -> Build:
    if build is not None:
        if build.definition_id != definition.pk:
            raise ValidationError(f"{build} was not built by {definition}; pick one of its own builds.")
        if not build.succeeded:
            raise ValidationError(f"{build} did not succeed ({build.get_status_display().lower()}); only a pushed "
                                  "image can be promoted.")
        return _whole_list(build)
    digest = (digest or "").strip().lower()
    if not DIGEST_RE.match(digest):
        raise ValidationError("Give the image digest as sha256: followed by 64 hexadecimal characters.")
    found = Build.objects.with_related().filter(definition=definition, digest=digest).succeeded().order_by("-number").first()
    if found is None:
        raise ValidationError(f"{short_digest(digest)} was never built by {definition}: only digests of its own "
                              "successful builds can be promoted.")
    return _whole_list(found)


def _whole_list(build: Build) -> Build:
    """A stage holds a manifest list whole: one architecture's image alone would leave the others' hosts behind."""
    if build.manifest_list_id:
        raise ValidationError(f"Build {build.number} is the {build.platform} image of manifest list build "
                              f"{build.manifest_list.number}: promote build {build.manifest_list.number}, which "
                              "carries every architecture.")
    return build


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
    confirm: str = "",
    request=None,
) -> Promotion:
    """Ask for `build`'s digest (or `digest`, which must be one of the definition's builds) to go to `target_stage`.

    Refused with the reason (ValidationError) when the stage belongs to another team, the digest was never built by the
    definition, the stage policy wants it in the previous stage first, the stage is pinned after a rollback (unless
    `roll_forward`), the stage holds it already, or the same request is open. With no approvals needed it starts
    applying at once. Open requests (waiting for approval or for the stage) to put an older build of the definition in
    the same stage are marked superseded by this one; they can be reopened. A request for an older build than the
    stage holds is approved only with the stage's name typed; on a stage that needs no approval it would apply at
    once, so the requester types it (`confirm`) or it is refused.
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
        backwards = moves_back(promotion, held_build(stage, definition, current))
        if backwards and promotion.required_approvals() == 0 and (confirm or "").strip() != stage.name:
            raise MoveBackUnconfirmed(f"This request {backwards} at once, since {stage.name} needs no approval: type "
                                  f"“{stage.name}” to confirm.")  # the row above goes with the transaction
        _audit_request(promotion, user, request, confirmed_move_back=backwards if backwards else "")
        _supersede_older(promotion, user, request)
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
            raise ValidationError(f"{short_digest(digest)} was never in {stage.name}; a rollback goes back to a digest the stage "
                                  "held before.")
        build = earlier.build or Build.objects.filter(definition=definition, digest=digest).order_by("-number").first()
        if build is None:
            raise ValidationError(f"The build of {short_digest(digest)} is gone; promote another digest instead.")
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


def _refuse_duplicate(stage, definition, digest, exclude=None):
    open_one = Promotion.objects.filter(
        target_stage=stage, definition=definition, digest=digest,
        status__in=[PromotionStatus.PENDING, PromotionStatus.APPROVED, PromotionStatus.APPLYING],
    ).exclude(pk=exclude.pk if exclude is not None else None).first()
    if open_one is not None:
        raise ValidationError(f"Request #{open_one.pk} already asks for this ({open_one.get_status_display().lower()}).")


def _supersede_older(promotion, user, request):
    """With the stage row locked: mark the open requests for older builds of the definition to the same stage as
    superseded by `promotion`, so approvers are no longer asked to move the stage to something already replaced."""
    older = (Promotion.objects.select_for_update(of=("self",))
             .filter(target_stage=promotion.target_stage, definition=promotion.definition, kind=PromotionKind.PROMOTE,
                     status__in=[PromotionStatus.PENDING, PromotionStatus.APPROVED],
                     build__number__lt=promotion.build.number)
             .select_related("build", "target_stage", "definition").order_by("pk"))
    for old in older:
        _set_status(old, PromotionStatus.SUPERSEDED, superseded_by=promotion,
                    note=f"Superseded by #{promotion.pk}, which asks for build {promotion.build.number}; reopen it to "
                         "ask again.")
        audit(action="promotion.supersede", summary=f"#{old.pk} (build {old.build.number} to {old.target_stage.name}) "
              f"is superseded by #{promotion.pk} (build {promotion.build.number})", actor=user, team=old.team, obj=old,
              request=request, detail=_detail(old, superseded_by=promotion.pk))


def _audit_request(promotion, user, request, *, confirmed_move_back=""):
    what = "rollback" if promotion.is_rollback else "promotion"
    extra = {"moves_back": confirmed_move_back, "confirmed": True} if confirmed_move_back else {}
    audit(action="promotion.request", summary=f"asked for {what} of {promotion.definition} {promotion.short_digest} to "
          f"{promotion.target_stage.name}: {promotion.reason}", actor=user, team=promotion.team, obj=promotion,
          request=request, detail=_detail(promotion, **extra))
    if promotion.emergency:
        audit(action="promotion.override_request", summary=f"asked for an emergency override for #{promotion.pk}: "
              f"{promotion.emergency_reason}", actor=user, team=promotion.team, obj=promotion, request=request,
              detail=_detail(promotion))


def _after_request(promotion, user, request):
    # A stage that wants a boot test starts one now, whatever the approvals; a check that refuses the request as it is
    # asked for (a digest without the signature the stage requires) takes the new row with it.
    refused = request_refusal(check_verdicts(promotion, start=True))
    if refused is not None:
        raise ValidationError(refused.message)
    started = _advance(promotion, actor=user, request=request)
    if promotion.status == PromotionStatus.PENDING:
        notifications.notify(event=notifications.PromotionEvent.APPROVAL_REQUESTED, team=promotion.team,
                             promotion=promotion, actor=user)
    return started


def _detail(promotion, **extra):
    return {
        "definition": str(promotion.definition), "digest": promotion.digest, "stage": promotion.target_stage.name,
        "kind": promotion.kind, "emergency": promotion.emergency, "previous_digest": promotion.previous_digest, **extra,
    }


# --- Decisions -------------------------------------------------------------------------------------------------------


def promotion_approve(*, promotion: Promotion, user: User, digest: str, comment: str = "", confirm: str = "",
                      request=None) -> Promotion:
    """Approve `promotion`'s digest. `digest` is the one the approver saw: a different one is refused.

    A request for a build older than the one its stage holds would move the stage back: it is approved only with the
    stage's name typed as `confirm`. Counted with the promotion row locked: the approval that completes the quorum
    starts the application, once.
    """
    return _decide(promotion=promotion, user=user, digest=digest, comment=comment, decision=ApprovalDecision.APPROVE,
                   confirm=confirm, request=request)


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


def _decide(*, promotion, user, digest, comment, decision, request, confirm=""):
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
            raise PromotionStateError(f"You looked at {short_digest(digest, missing='(no digest)')}, but request "
                                      f"#{locked.pk} is for {locked.short_digest}; reload the page and look again.")
        backwards = ""
        if decision == ApprovalDecision.APPROVE:
            backwards = moves_back(locked, held_build(locked.target_stage, locked.definition))
            if backwards and (confirm or "").strip() != locked.target_stage.name:
                raise ValidationError(f"Request #{locked.pk} {backwards}. To approve it anyway, type "
                                      f"“{locked.target_stage.name}” to confirm; nothing was recorded.")
        if decision == ApprovalDecision.APPROVE:
            for verdict in check_verdicts(locked):
                if not verdict.passed:
                    raise PromotionStateError(f"{verdict.message} It can be approved once that has passed; nothing was "
                                              "recorded.")
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
                      + (f", which {backwards}, confirmed by typing the stage's name" if backwards else "")
                      + (f": {comment.strip()}" if comment and comment.strip() else ""),
              actor=user, team=locked.team, obj=locked, request=request,
              detail=_detail(locked, comment=comment or "", **({"moves_back": backwards} if backwards else {})))
        if decision == ApprovalDecision.REJECT:
            _set_status(locked, PromotionStatus.REJECTED, note=f"Rejected by {user.username}: {comment.strip()}",
                        decided_at=now)
            notifications.notify(event=notifications.PromotionEvent.REJECTED, team=locked.team, promotion=locked,
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


def promotion_reopen(*, promotion: Promotion, user: User, confirm: str = "", request=None) -> Promotion:
    """Ask again for a request that a newer one superseded: it waits for approval again. The approvals it had stand
    unless it would now move its stage back (the stage took the newer build meanwhile); then they were given for a move
    forward and are set aside, and each approver must confirm the move back. On a stage that needs no approval nobody
    would: the request applies at once, so a move back is reopened only with the stage's name typed as `confirm`."""
    check_team_action(user, promotion.target_stage.team, Action.DEVELOP)
    with transaction.atomic():
        Stage.objects.select_for_update().get(pk=promotion.target_stage_id)  # serialised with new requests
        locked = _locked(promotion)
        if locked.status != PromotionStatus.SUPERSEDED:
            raise PromotionStateError(f"Only a superseded request can be reopened; #{locked.pk} is "
                                      f"{locked.get_status_display().lower()}.")
        stage, definition = locked.target_stage, locked.definition
        current = stage_current(stage, definition)
        if current is not None and current.digest == locked.digest:
            raise ValidationError(f"{stage.name} holds {locked.short_digest} already: nothing to ask for.")
        if current is not None and current.pins and not locked.roll_forward:
            raise ValidationError(f"{stage.name} is pinned to {current.short_digest} since a rollback; ask again with "
                                  "“roll forward”.")
        _refuse_duplicate(stage, definition, locked.digest, exclude=locked)
        now = timezone.now()
        backwards = moves_back(locked, held_build(stage, definition, current))
        at_once = bool(backwards) and locked.required_approvals() == 0
        if at_once and (confirm or "").strip() != stage.name:
            raise MoveBackUnconfirmed(f"Reopening #{locked.pk} {backwards} at once, since {stage.name} needs no approval: "
                                  f"type “{stage.name}” to confirm.")
        note = f"Reopened by {user.username}."
        if backwards:
            set_aside = Approval.objects.filter(promotion=locked, superseded_at__isnull=True).update(superseded_at=now)
            note += (f" It {backwards}, so it needs its approvals again, each confirmed"
                     + (f" ({set_aside} earlier decision{'s' if set_aside != 1 else ''} set aside)." if set_aside
                        else "."))
        newer = locked.superseded_by_id
        _set_status(locked, PromotionStatus.PENDING, note=note, superseded_by=None, decided_at=None)
        audit(action="promotion.reopen", summary=f"reopened #{locked.pk} ({definition} build {locked.build.number} to "
              f"{stage.name}), superseded by #{newer}" + (f"; it {backwards}" if backwards else ""), actor=user,
              team=locked.team, obj=locked, request=request,
              detail=_detail(locked, superseded_by=newer, **({"moves_back": backwards} if backwards else {}),
                             **({"confirmed": True} if at_once else {})))
        _after_request(locked, user, request)
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
            _set_status(locked, PromotionStatus.PENDING, note=f"Retried after its approvals stopped counting "
                        f"({result.summary()}): it needs them again before it is applied.")
            notifications.notify(event=notifications.PromotionEvent.APPROVAL_REQUESTED, team=locked.team,
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
        notifications.notify(event=notifications.PromotionEvent.APPROVED, team=promotion.team, promotion=promotion,
                             actor=actor)
    return run


def _start_or_wait(promotion, *, actor, request, now):
    stage = promotion.target_stage
    blocked = "" if promotion.is_rollback else stage.blocked_reason(now)
    if blocked and not promotion.emergency:
        _set_status(promotion, PromotionStatus.APPROVED, note=f"Approved; waits because {blocked}.",
                    decided_at=promotion.decided_at or now)
        return None
    verdicts = [] if promotion.is_rollback else check_verdicts(promotion, start=True)
    refused = check_refusal(verdicts)
    if refused is not None:
        _set_status(promotion, PromotionStatus.FAILED, note=f"Refused: {refused.message}",
                    decided_at=promotion.decided_at or now)
        audit(action="promotion.refused", summary=f"refused to apply #{promotion.pk}: {refused.message}", actor=actor,
              team=stage.team, obj=promotion, request=request, detail=_detail(promotion, check=refused.name))
        return None
    waiting = next((v for v in verdicts if v.running), None)
    if waiting is not None:
        _set_status(promotion, PromotionStatus.APPROVED, note=f"Approved; waits: {waiting.message}",
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
    if not run_enqueue(tasks.promotion_apply, run.pk, run=run, what="it"):
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
