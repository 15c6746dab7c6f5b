"""The gate's reads: who may approve a promotion, whether its quorum is met, and what each stage holds now
(docs/promotions.md). Nothing here writes; `services` decides with these under a row lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import OuterRef, Subquery
from django.utils import timezone

from builds.models import Build, ImageDefinition
from portal import registry
from portal.access import can, second_factor_refusal
from portal.models import IS_TEAM_TOKEN, ROLE_ACTIONS, Action, Team, User
from portal.registry import GateVerdict

from .models import Approval, ApprovalDecision, Promotion, Stage, StageGroupRequirement, StageHistory

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
    candidates = candidates.filter(is_active=True).exclude(IS_TEAM_TOKEN).distinct().order_by("username")
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


# --- Checks other features answer (boot tests) ------------------------------------------------------------------------


def check_verdicts(promotion: Promotion, *, start: bool = False) -> list[GateVerdict]:
    """What each registered check (`portal.registry.promotion_check`) says of `promotion`, leaving out those that do
    not apply to its stage. With `start`, a check may start what it needs (a boot test); the card only reads."""
    verdicts = []
    for check in registry.promotion_checks():
        verdict = check(promotion=promotion, start=start)
        if verdict is not None:
            verdicts.append(verdict)
    return verdicts


def check_refusal(verdicts: list[GateVerdict]) -> GateVerdict | None:
    """The first verdict that refuses the promotion (failed, or nothing to judge by), else None."""
    return next((v for v in verdicts if v.state in (GateVerdict.FAILED, GateVerdict.MISSING)), None)


def request_refusal(verdicts: list[GateVerdict]) -> GateVerdict | None:
    """The first verdict that refuses the promotion as it is asked for (`refuses_request`), else None."""
    return next((v for v in verdicts if v.refuses_request and v.state in (GateVerdict.FAILED, GateVerdict.MISSING)),
                None)


# --- Stage state -----------------------------------------------------------------------------------------------------


def stage_current(stage: Stage, definition: ImageDefinition) -> StageHistory | None:
    return StageHistory.objects.current(stage, definition)


def current_entries(stages, definitions) -> dict[tuple[int, int], StageHistory]:
    """{(stage id, definition id): the entry for what the stage holds now}, one query for the ids and one for the rows,
    however long the history is."""
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


# --- Order -----------------------------------------------------------------------------------------------------------


def held_build(stage: Stage, definition: ImageDefinition, entry: StageHistory | None = None) -> Build | None:
    """The build whose digest `stage` holds for `definition` now (or that `entry` names), or None."""
    entry = entry if entry is not None else stage_current(stage, definition)
    if entry is None:
        return None
    if entry.build is not None:
        return entry.build
    return Build.objects.filter(definition=definition, digest=entry.digest).order_by("-number").first()


def moves_back(promotion: Promotion, held: Build | None) -> str:
    """What approving `promotion` would do to its stage if its build is older than the one the stage holds
    ("would move test back from build 3 to build 2"), or "". Build numbers order a definition's builds; a rollback is
    meant to go back, under its own policy, so it is never "moving back" here."""
    if promotion.is_rollback or held is None or held.definition_id != promotion.definition_id:
        return ""
    if held.number <= promotion.build.number:
        return ""
    return (f"would move {promotion.target_stage.name} back from build {held.number} to build "
            f"{promotion.build.number}")


def held_builds(promotions) -> dict[tuple[int, int], Build]:
    """{(stage id, definition id): the build the stage holds} for the stages and definitions of `promotions`, in one
    query per stage (for a page of requests)."""
    promotions = list(promotions)
    stages = {p.target_stage_id: p.target_stage for p in promotions}.values()
    definitions = {p.definition_id for p in promotions}
    entries = current_entries(stages, definitions)
    held = {key: e.build for key, e in entries.items() if e.build is not None}
    missing: dict[tuple[int, str], list] = {}
    for key, entry in entries.items():
        if entry.build is None:
            missing.setdefault((key[1], entry.digest), []).append(key)
    if missing:
        digests = {digest for _, digest in missing}
        for build in Build.objects.filter(definition_id__in=definitions, digest__in=digests).order_by("number"):
            for key in missing.get((build.definition_id, build.digest), ()):
                held[key] = build
    return held
