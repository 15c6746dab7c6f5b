"""A stage's policy and a team's approver groups, changed by team admins: approvals needed, exclusions, freezes, change
windows (docs/promotions.md). Each change is written once here, audited, and, when it may let a held promotion go,
followed by a pass of `promotions_apply_due`.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from portal.access import check_team_action
from portal.models import Action, Membership, Team, User
from portal.services import audit

from . import tasks
from .models import DEFAULT_STAGES, ApproverGroup, ChangeWindow, Stage, StageFreeze, StageGroupRequirement
from .services import PromotionStateError

# --- A new team's stages --------------------------------------------------------------------------------------------


def stages_ensure_default(*, team):
    """Give a team the stages dev, test and prod (approvals: none, one, two) unless it has stages already."""
    if team.stages.exists():
        return list(team.stages.all())
    return [
        Stage.objects.create(team=team, name=name, position=position, required_approvals=position)
        for name, position in DEFAULT_STAGES
    ]


# --- Stage policy (team admins) --------------------------------------------------------------------------------------

POLICY_FIELDS = ("description", "required_approvals", "exclude_requester", "exclude_author", "exclude_build_triggerer",
                 "approval_ttl_hours", "require_previous_stage", "require_boot_test", "emergency_extra_approvals",
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
    tasks.promotions_apply_due.delay()


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
