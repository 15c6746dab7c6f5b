"""Pages for promotions (the list and inbox, the request form, the approval card), stages (the board, a stage's history,
policy, freezes and windows, rollbacks) and approver groups.

Every object comes through `builds.releases.access`; every change through `services` or `policy`.
Refusals are 403 (may see, may not act), 409 (the request is no longer in a state for this) or 400 (bad input), each
with the reason on the page.
"""

from itertools import groupby

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from builds import compare
from builds.access import get_definition_for_user
from builds.models import Build, ImageDefinition
from builds.multiarch import members_by_architecture
from portal import registry
from portal.access import can, get_team_for_user, teams_where
from portal.models import Action, AuditEvent, Team
from portal.views import current_team, error_text

from . import gate, policy, services
from .access import (
    get_approver_group_for_user,
    get_change_window_for_user,
    get_freeze_for_user,
    get_promotion_for_user,
    get_stage_for_user,
)
from .forms import (
    ApproverGroupForm,
    ChangeWindowForm,
    DecisionForm,
    FreezeForm,
    PromotionFilter,
    PromotionRequestForm,
    RollbackForm,
    StagePolicyForm,
)
from .models import Promotion, PromotionStatus, StageHistory
from .services import MoveBackUnconfirmed, PromotionStateError

# --- The list and the inbox ------------------------------------------------------------------------------------------


@login_required
def promotion_list(request):
    """All promotion requests of the user's teams, or (?view=inbox) those waiting for the user's decision."""
    teams = Team.objects.visible_to(request.user)
    inbox = Promotion.objects.waiting_for(request.user)
    view = request.GET.get("view") or ("inbox" if inbox.exists() else "all")
    base = (inbox if view == "inbox" else Promotion.objects.visible_to(request.user)).with_related()
    data = request.GET.copy()
    team = current_team(request)
    if "team" not in data and team is not None:
        data["team"] = str(team.pk)
    promotion_filter = PromotionFilter(data, queryset=base, teams=teams)
    rows = promotion_filter.qs if promotion_filter.is_valid() else base.none()
    rows = rows.annotate(approvals_given=Count("approvals", filter=Q(approvals__decision="approve",
                                                                     approvals__superseded_at__isnull=True)))
    if view == "inbox":  # grouped by stage, in the order of the stages
        rows = rows.order_by("target_stage__team__name", "target_stage__position", "-created_at", "-id")
    else:
        rows = rows.order_by("-created_at", "-id")
    page = Paginator(rows, 25).get_page(request.GET.get("page"))
    page.object_list = list(page.object_list)
    open_rows = [p for p in page.object_list if p.is_open]
    held = gate.held_builds(open_rows) if open_rows else {}
    for p in page.object_list:
        p.moves_back = gate.moves_back(p, held.get((p.target_stage_id, p.definition_id))) if p.is_open else ""
    if view == "inbox":
        groups = [(stage, list(members)) for stage, members in groupby(page.object_list, key=lambda p: p.target_stage)]
    else:
        groups = [(None, page.object_list)]
    context = {
        "filter": promotion_filter, "page": page, "groups": groups, "view": view, "inbox_count": inbox.count(),
        "can_request": teams_where(request.user, Action.DEVELOP).exists(),
        "filtered": any(v for k, v in request.GET.items() if k not in ("page", "view")),
    }
    if request.htmx and request.htmx.target == "promotion-rows":
        return render(request, "releases/_rows.html", context)
    return render(request, "releases/list.html", context)


# --- Requesting ------------------------------------------------------------------------------------------------------


@login_required
def promotion_create(request):
    """Step 1 picks the definition (?definition=), step 2 the build, the stage and the reason."""
    build = None
    if request.GET.get("build", "").isdecimal():
        build = Build.objects.visible_to(request.user).with_related().filter(pk=request.GET["build"]).first()
    definition_id = request.POST.get("definition") or request.GET.get("definition") or (build.definition_id if build
                                                                                         else "")
    if not str(definition_id).isdecimal():
        definitions = ImageDefinition.objects.filter(team__in=teams_where(request.user, Action.DEVELOP)) \
            .select_related("team").order_by("team__name", "name")
        if not definitions and not teams_where(request.user, Action.DEVELOP).exists():
            raise PermissionDenied("You need the developer role in a team to ask for promotions.")
        return render(request, "releases/request_pick.html", {"definitions": definitions})
    definition = get_definition_for_user(request.user, int(definition_id), action=Action.DEVELOP)
    initial = {"build": build.pk if build and build.definition_id == definition.pk else None}
    if request.GET.get("stage"):
        initial["target_stage"] = definition.team.stages.filter(name=request.GET["stage"]).first()
    form = PromotionRequestForm(request.POST or None, definition=definition, initial=initial)
    status, ask_confirm = 200, bool(request.POST.get("confirm"))
    if request.method == "POST":
        if form.is_valid():
            try:
                promotion = services.promotion_request(
                    definition=definition, build=form.cleaned_data["build"],
                    target_stage=form.cleaned_data["target_stage"], user=request.user,
                    reason=form.cleaned_data["reason"], emergency=form.cleaned_data["emergency"],
                    emergency_reason=form.cleaned_data["emergency_reason"],
                    roll_forward=form.cleaned_data["roll_forward"], confirm=form.cleaned_data["confirm"],
                    request=request)
            except ValidationError as exc:
                form.add_error(None, error_text(exc))
                ask_confirm = isinstance(exc, MoveBackUnconfirmed)
            else:
                _tell(request, promotion, _created_message(promotion))
                return redirect(promotion)
        status = 400
    board = gate.stage_board(definition.team, [definition])[0]
    return render(request, "releases/request.html", {
        "definition": definition, "form": form, "board": board,
        "pinned": any(entry is not None and entry.pins for _, entry in board["cells"]),
        "ask_confirm": ask_confirm,
        "stages": [(stage, _policy_lines(stage)) for stage in definition.team.stages.all()],
    }, status=status)


def _tell(request, promotion, text):
    """The outcome of a request or decision, as a success, or an error when applying it failed at once."""
    (messages.error if promotion.status == PromotionStatus.FAILED else messages.success)(request, text)


def _created_message(promotion):
    if promotion.status == PromotionStatus.FAILED:
        return f"Request #{promotion.pk} needs no approval, but applying it failed: {promotion.status_note}"
    if promotion.status == PromotionStatus.APPLYING:
        return f"Request #{promotion.pk} needs no approval: it is being applied now."
    if promotion.status == PromotionStatus.APPROVED:
        return f"Request #{promotion.pk} needs no approval; it waits: {promotion.status_note}"
    return f"Request #{promotion.pk} is waiting for approval; the approvers were notified."


def _policy_lines(stage):
    """The stage's policy, in plain words, for the request form and the card."""
    lines = []
    groups = list(stage.group_requirements.select_related("group"))
    if stage.required_approvals == 0:
        lines.append("Applies without approval.")
    elif groups:
        lines.append(f"{stage.required_approvals} approval{'s' if stage.required_approvals != 1 else ''}: "
                     + ", ".join(f"{req.minimum} from {req.group.name}" for req in groups) + ".")
    else:
        lines.append(f"{stage.required_approvals} approval{'s' if stage.required_approvals != 1 else ''} from people "
                     "with the approver role.")
    excluded = [who for flag, who in ((stage.exclude_requester, "the requester"),
                                      (stage.exclude_author, "the revision's author"),
                                      (stage.exclude_build_triggerer, "whoever started the build")) if flag]
    if excluded and stage.required_approvals:
        lines.append("Not by " + ", ".join(excluded) + ".")
    if stage.approval_ttl_hours:
        lines.append(f"Approvals expire after {stage.approval_ttl_hours} h.")
    if stage.require_previous_stage and stage.position > 0:
        lines.append("The image must have been in the previous stage.")
    if stage.require_boot_test:
        lines.append("The image must have passed a boot test in a throwaway VM.")
    blocked = stage.blocked_reason()
    if blocked:
        lines.append(f"Now: {blocked}. An emergency override needs {stage.emergency_extra_approvals} more "
                     f"approval{'s' if stage.emergency_extra_approvals != 1 else ''}.")
    return lines


# --- The approval card -----------------------------------------------------------------------------------------------


def _card_context(request, promotion):
    stage, definition = promotion.target_stage, promotion.definition
    applied = StageHistory.objects.filter(promotion=promotion).first()
    if applied is not None:
        # Applied: what it changed, against what the stage held just before.
        current = StageHistory.objects.filter(stage=stage, definition=definition, applied_at__lt=applied.applied_at) \
            .order_by("-applied_at", "-id").first()
    else:
        current = gate.stage_current(stage, definition)
    current_build = None
    if current is not None:
        current_build = current.build or Build.objects.filter(definition=definition, digest=current.digest).first()
    comparison = added = removed = None
    architectures = []
    if current_build is not None and current_build.digest != promotion.digest:
        comparison = compare.compare_builds(current_build, promotion.build)
        added, removed = compare.diff_stats(comparison.containerfile_rows)
        if current_build.is_manifest_list and promotion.build.is_manifest_list:
            architectures = compare.compare_lists(members_by_architecture(current_build),
                                                  members_by_architecture(promotion.build))
    result = gate.quorum(promotion)
    refusal = gate.approval_refusal(promotion, request.user)
    checks = gate.check_verdicts(promotion) if not promotion.is_rollback else []
    unpassed = next((check for check in checks if not check.passed), None)  # approving waits for it; rejecting not
    mine = promotion.approvals.filter(approver=request.user, superseded_at__isnull=True).first()
    decisions = list(promotion.approvals.select_related("approver").order_by("created_at", "id"))
    expired_ids = {a.pk for a in result.expired}
    not_counted = {a.pk: why for a, why in result.not_counted}
    for decision in decisions:
        decision.expired = decision.pk in expired_ids
        decision.not_counted = not_counted.get(decision.pk, "")
        decision.expires = decision.expires_at(stage)
    events = AuditEvent.objects.filter(object_type="releases.promotion", object_id=str(promotion.pk)).order_by("seq")
    is_open = promotion.status == PromotionStatus.PENDING
    # Only while it may still be applied: once applied, "back" is history, and the stage may have moved on since.
    backwards = gate.moves_back(promotion, current_build) if promotion.is_open else ""
    can_reopen = promotion.status == PromotionStatus.SUPERSEDED and can(request.user, stage.team, Action.DEVELOP)
    # Reopened, a request that moves a stage without approvals back applies at once: its requester confirms it.
    reopen_backwards = gate.moves_back(promotion, current_build) if can_reopen else ""
    disk_images_url = registry.fragment_url("disk_images.of_digest", promotion.digest)
    return {
        "promotion": promotion, "stage": stage, "definition": definition, "build": promotion.build,
        "current": current, "current_build": current_build, "c": comparison, "added": added, "removed": removed,
        "architectures": architectures,
        "quorum": result, "decisions": decisions, "policy": _policy_lines(stage),
        "checks": checks,
        "approve_blocked": f"{unpassed.message} It can be approved once that has passed." if unpassed else "",
        "can_decide": is_open and not refusal and (mine is None or (mine.decision == "approve"
                                                                    and mine.pk in expired_ids)),
        "refusal": refusal if is_open else "", "mine": mine,
        "can_withdraw": promotion.status in (PromotionStatus.PENDING, PromotionStatus.APPROVED, PromotionStatus.FAILED)
        and (promotion.requested_by_id == request.user.pk or can(request.user, stage.team, Action.ADMIN)),
        "can_retry": promotion.status == PromotionStatus.FAILED and can(request.user, stage.team, Action.DEVELOP),
        "can_reopen": can_reopen,
        "reopen_confirm": reopen_backwards if reopen_backwards and promotion.required_approvals() == 0 else "",
        "backwards": backwards,
        "superseded_by": (Promotion.objects.with_related().filter(pk=promotion.superseded_by_id).first()
                          if promotion.superseded_by_id else None),
        "form": DecisionForm(initial={"digest": promotion.digest}),
        "hosts_url": registry.fragment_url("promotion.hosts", promotion.pk),
        "rollout_url": registry.fragment_url("promotion.rollout", promotion.pk),
        "trust_url": registry.fragment_url("promotion.trust", promotion.pk),
        "approvers": gate.eligible_approvers(promotion) if is_open else [],
        "events": events, "live": promotion.status == PromotionStatus.APPLYING, "applied": applied,
        "disk_images_url": f"{disk_images_url}?definition={definition.pk}" if disk_images_url else "",
    }


@login_required
def promotion_detail(request, pk):
    promotion = get_promotion_for_user(request.user, pk)
    context = _card_context(request, promotion)
    if request.htmx and request.htmx.target == "promotion-live":
        response = render(request, "releases/_live.html", context)
        if not context["live"]:
            response["HX-Refresh"] = "true"  # applied or failed: the whole card changes (history, alerts, buttons)
        return response
    return render(request, "releases/detail.html", context)


def _decision(request, pk, decide, done, *, confirmable=False):
    promotion = get_promotion_for_user(request.user, pk)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        problem = ("The form lost the digest you looked at; reload the page and decide again." if "digest" in form.errors
                   else " ".join(form.errors.get("comment", [])) or "Check the form.")
        return _refused(request, promotion, ValidationError(problem), 400)
    try:
        extra = {"confirm": form.cleaned_data["confirm"]} if confirmable else {}
        promotion = decide(promotion=promotion, user=request.user, digest=form.cleaned_data["digest"],
                           comment=form.cleaned_data["comment"], request=request, **extra)
    except PromotionStateError as exc:
        return _refused(request, promotion, exc, 409)
    except ValidationError as exc:
        return _refused(request, promotion, exc, 400)
    _tell(request, promotion, done(promotion))
    return redirect(promotion)


def _refused(request, promotion, exc, status):
    context = _card_context(request, promotion)
    context["error"] = error_text(exc)
    return render(request, "releases/detail.html", context, status=status)


def _approved_message(promotion):
    if promotion.status == PromotionStatus.FAILED:
        return f"Approved. That completes the approvals, but applying it failed: {promotion.status_note}"
    if promotion.status == PromotionStatus.APPLYING:
        return f"Approved. That completes the approvals: {promotion.target_stage.name} is being updated now."
    if promotion.status == PromotionStatus.APPROVED:
        return f"Approved. It has all its approvals and waits: {promotion.status_note}"
    return f"Approved. It still needs {gate.quorum(promotion).missing or 'group'} more approval(s)."


@login_required
@require_POST
def promotion_approve(request, pk):
    return _decision(request, pk, services.promotion_approve, _approved_message, confirmable=True)


@login_required
@require_POST
def promotion_reject(request, pk):
    return _decision(request, pk, services.promotion_reject,
                     lambda p: f"Rejected request #{p.pk}; {p.requested_by_name or 'the requester'} was told why.")


@login_required
@require_POST
def promotion_withdraw(request, pk):
    promotion = get_promotion_for_user(request.user, pk)
    try:
        services.promotion_withdraw(promotion=promotion, user=request.user, request=request)
    except PromotionStateError as exc:
        return _refused(request, promotion, exc, 409)
    messages.success(request, f"Withdrew request #{promotion.pk}.")
    return redirect(promotion)


@login_required
@require_POST
def promotion_reopen(request, pk):
    promotion = get_promotion_for_user(request.user, pk, action=Action.DEVELOP)
    try:
        promotion = services.promotion_reopen(promotion=promotion, user=request.user,
                                              confirm=request.POST.get("confirm", "")[:100], request=request)
    except PromotionStateError as exc:
        return _refused(request, promotion, exc, 409)
    except ValidationError as exc:
        return _refused(request, promotion, exc, 400)
    if promotion.status == PromotionStatus.PENDING:
        messages.success(request, f"Reopened request #{promotion.pk}: it waits for approval again.")
    else:
        _tell(request, promotion, _created_message(promotion))
    return redirect(promotion)


@login_required
@require_POST
def promotion_retry(request, pk):
    promotion = get_promotion_for_user(request.user, pk, action=Action.DEVELOP)
    try:
        services.promotion_retry(promotion=promotion, user=request.user, request=request)
    except PromotionStateError as exc:
        return _refused(request, promotion, exc, 409)
    except ValidationError as exc:
        return _refused(request, promotion, exc, 400)
    promotion.refresh_from_db()
    if promotion.status == PromotionStatus.PENDING:
        messages.warning(request, f"Request #{promotion.pk} needs its approvals again: {promotion.status_note}")
    elif promotion.status == PromotionStatus.APPROVED:
        messages.success(request, f"Request #{promotion.pk} will be applied again; it waits: {promotion.status_note}")
    elif promotion.status == PromotionStatus.FAILED:
        messages.error(request, f"Applying request #{promotion.pk} failed again: {promotion.status_note}")
    else:
        messages.success(request, f"Applying request #{promotion.pk} again.")
    return redirect(promotion)


# --- Stages ----------------------------------------------------------------------------------------------------------


@login_required
def stage_board(request):
    """What each stage holds, per definition, for the current team (or all of the user's teams)."""
    team = current_team(request)
    teams = [team] if team is not None else list(Team.objects.visible_to(request.user))
    boards = []
    for t in teams:
        definitions = ImageDefinition.objects.filter(team=t).order_by("name")
        boards.append({"team": t, "stages": list(t.stages.all()), "rows": gate.stage_board(t, definitions),
                       "can_develop": can(request.user, t, Action.DEVELOP),
                       "can_admin": can(request.user, t, Action.ADMIN),
                       "open": Promotion.objects.filter(target_stage__team=t,
                                                        status__in=[PromotionStatus.PENDING, PromotionStatus.APPROVED,
                                                                    PromotionStatus.APPLYING]).count()})
    return render(request, "releases/stage_board.html", {"boards": boards})


@login_required
def stage_detail(request, pk):
    stage = get_stage_for_user(request.user, pk)
    history = StageHistory.objects.filter(stage=stage).select_related("definition", "build", "promotion")
    definition_id = request.GET.get("definition", "")
    if definition_id.isdecimal():
        history = history.filter(definition_id=int(definition_id))
    page = Paginator(history.order_by("-applied_at", "-id"), 25).get_page(request.GET.get("page"))
    definitions = list(ImageDefinition.objects.filter(team=stage.team).order_by("name"))
    current_ids = {entry.pk for entry in gate.current_entries([stage], definitions).values()}
    now = timezone.now()
    return render(request, "releases/stage_detail.html", {
        "stage": stage, "page": page, "current_ids": current_ids, "policy": _policy_lines(stage),
        "definitions": definitions,
        "definition_id": int(definition_id) if definition_id.isdecimal() else None,
        "freezes": [f for f in stage.freezes.order_by("-starts_at")[:10]], "now": now,
        "windows": list(stage.change_windows.all()), "groups": list(stage.group_requirements.select_related("group")),
        "can_develop": can(request.user, stage.team, Action.DEVELOP),
        "can_admin": can(request.user, stage.team, Action.ADMIN),
        "freeze_form": FreezeForm(), "window_form": ChangeWindowForm(), "rollback_form": RollbackForm(),
        "blocked": stage.blocked_reason(now), "hosts_url": registry.fragment_url("stage.hosts", stage.pk),
    })


@login_required
def stage_policy(request, pk):
    stage = get_stage_for_user(request.user, pk, action=Action.ADMIN)
    form = StagePolicyForm(request.POST or None, instance=stage)
    if request.method == "POST" and form.is_valid():
        try:
            fields = {name: form.cleaned_data[name] for name in StagePolicyForm.Meta.fields}
            policy.stage_update_policy(stage=stage, user=request.user, groups=form.group_minimums(),
                                           request=request, **fields)
        except ValidationError as exc:
            form.add_error(None, error_text(exc))
        else:
            messages.success(request, f"Saved the policy of {stage.name}. Pending requests are judged by it from now on.")
            return redirect(stage)
    return render(request, "releases/stage_policy.html", {"stage": stage, "form": form},
                  status=400 if form.errors else 200)


@login_required
@require_POST
def stage_rollback(request, pk):
    stage = get_stage_for_user(request.user, pk, action=Action.DEVELOP)
    form = RollbackForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say why the stage must go back.")
        return redirect(stage)
    definition = get_definition_for_user(request.user, form.cleaned_data["definition"], action=Action.DEVELOP)
    try:
        promotion = services.promotion_rollback_request(
            stage=stage, definition=definition, digest=form.cleaned_data["digest"], user=request.user,
            reason=form.cleaned_data["reason"], request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return redirect(stage)
    _tell(request, promotion, _created_message(promotion))
    return redirect(promotion)


@login_required
@require_POST
def stage_freeze(request, pk):
    stage = get_stage_for_user(request.user, pk, action=Action.ADMIN)
    form = FreezeForm(request.POST)
    if form.is_valid():
        ends_at = form.cleaned_data["ends_at"]
        try:
            policy.stage_freeze(stage=stage, user=request.user, reason=form.cleaned_data["reason"],
                                    ends_at=ends_at, request=request)
        except ValidationError as exc:
            messages.error(request, error_text(exc))
        else:
            messages.success(request, f"{stage.name} is frozen: approved promotions wait until the freeze ends.")
    else:
        messages.error(request, "A freeze needs a reason" + (" and a valid end time." if form.errors.get("ends_at")
                                                            else "."))
    return redirect(stage)


@login_required
@require_POST
def freeze_lift(request, pk):
    freeze = get_freeze_for_user(request.user, pk)
    try:
        policy.stage_unfreeze(freeze=freeze, user=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, f"Lifted the freeze of {freeze.stage.name}; approved promotions apply within a "
                                  "minute.")
    return redirect(freeze.stage)


@login_required
@require_POST
def window_add(request, pk):
    stage = get_stage_for_user(request.user, pk, action=Action.ADMIN)
    form = ChangeWindowForm(request.POST)
    if form.is_valid():
        try:
            window = policy.change_window_add(stage=stage, user=request.user, request=request,
                                                  weekdays=form.cleaned_data["weekdays"],
                                                  starts=form.cleaned_data["starts"], ends=form.cleaned_data["ends"])
        except ValidationError as exc:
            messages.error(request, error_text(exc))
        else:
            messages.success(request, f"{stage.name} takes changes {window} ({stage.window_timezone}) from now on.")
    else:
        messages.error(request, "A change window needs at least one day, a start and an end time.")
    return redirect(stage)


@login_required
@require_POST
def window_delete(request, pk):
    window = get_change_window_for_user(request.user, pk)
    stage = window.stage
    policy.change_window_remove(window=window, user=request.user, request=request)
    messages.success(request, f"Removed the change window {window}.")
    return redirect(stage)


# --- Approver groups -------------------------------------------------------------------------------------------------


@login_required
def approver_groups(request, slug):
    team = get_team_for_user(request.user, slug)
    is_admin = can(request.user, team, Action.ADMIN)
    form = ApproverGroupForm(request.POST or None, team=team)
    if request.method == "POST":
        if not is_admin:
            raise PermissionDenied(f"Only admins of {team} manage approver groups.")
        if form.is_valid():
            try:
                group = policy.approver_group_save(team=team, user=request.user, request=request,
                                                       **form.cleaned_data)
            except ValidationError as exc:
                form.add_error(None, error_text(exc))
            else:
                messages.success(request, f"Created approver group {group.name}. Require it on a stage's policy page.")
                return redirect("releases:approver_groups", slug=team.slug)
    groups = team.approver_groups.prefetch_related("members", "stage_requirements__stage").order_by("name")
    return render(request, "releases/approver_groups.html",
                  {"team": team, "groups": groups, "form": form if is_admin else None, "is_admin": is_admin},
                  status=400 if form.errors else 200)


@login_required
def approver_group_edit(request, pk):
    group = get_approver_group_for_user(request.user, pk)
    team = group.team
    initial = {"name": group.name, "description": group.description, "members": list(group.members.all())}
    form = ApproverGroupForm(request.POST or None, team=team, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            policy.approver_group_save(team=team, user=request.user, group=group, request=request,
                                           **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, error_text(exc))
        else:
            messages.success(request, f"Saved approver group {group.name}.")
            return redirect("releases:approver_groups", slug=team.slug)
    return render(request, "releases/approver_group_form.html", {"team": team, "group": group, "form": form},
                  status=400 if form.errors else 200)


@login_required
@require_POST
def approver_group_delete(request, pk):
    group = get_approver_group_for_user(request.user, pk)
    team = group.team
    policy.approver_group_delete(group=group, user=request.user, request=request)
    messages.success(request, f"Deleted approver group {group.name}; stages that required it no longer do.")
    return redirect("releases:approver_groups", slug=team.slug)
