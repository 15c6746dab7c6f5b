"""Rollout pages: the list, a rollout (live: its batches as cells coloured by each host's step, the one-line summary,
the log and the audit trail), its controls, a stage's policy and the start form, and the card a promotion loads."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from builds.releases.access import get_promotion_for_user
from builds.releases.models import Stage
from hosts.access import get_host_for_user
from hosts.models import HostState, ReferenceDigest
from portal.access import can, teams_where
from portal.models import Action, AuditEvent
from portal.views import _viewer_context, current_team

from . import services
from .access import get_rollout_for_user, get_stage_for_rollouts
from .engine import summary
from .forms import PolicyForm, StartForm, windows_text
from .models import Rollout, RolloutHost, RolloutPolicy, Step


@login_required
@require_GET
def rollout_list(request):
    rollouts = Rollout.objects.visible_to(request.user).select_related("stage", "team", "run", "started_by")
    page = Paginator(rollouts, 25).get_page(request.GET.get("page"))
    operate_stages = Stage.objects.filter(team__in=teams_where(request.user, Action.OPERATE)).select_related("team")
    return render(request, "rollouts/rollout_list.html", {"page": page,
                                                          "operate_stages": operate_stages})


def _batches(rows):
    batches = {}
    for row in rows:
        batches.setdefault(row.batch, []).append(row)
    return [(number, "Canary" if number == 0 else f"Batch {number}", members) for number, members in
            sorted(batches.items())]


@login_required
@require_GET
def rollout_detail(request, pk):
    rollout = get_rollout_for_user(request.user, pk)
    rows = list(RolloutHost.objects.filter(rollout=rollout).select_related("host").order_by("batch", "position", "id"))
    context = {
        "rollout": rollout, "run": rollout.run, "batches": _batches(rows), "summary": summary(rows),
        "not_updated": [row for row in rows if row.step in (Step.FAILED, Step.ROLLED_BACK, Step.ROLLING_BACK,
                                                            Step.SKIPPED)],
        "steps": Step.choices, "can_operate": can(request.user, rollout.team, Action.OPERATE),
        "audit": AuditEvent.objects.filter(object_type="rollouts.rollout", object_id=str(rollout.pk)).order_by("-seq")[:50],
    }
    if request.htmx:
        return render(request, "rollouts/_rollout_live.html", context)
    return render(request, "rollouts/rollout_detail.html", {**context, **_viewer_context(rollout.run)})


def _control(request, pk, function, done, **kwargs):
    rollout = get_rollout_for_user(request.user, pk, action=Action.OPERATE)
    try:
        function(rollout=rollout, user=request.user, request=request, **kwargs)
    except services.RolloutError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, done)
    return redirect(rollout)


@login_required
@require_POST
def rollout_pause(request, pk):
    return _control(request, pk, services.rollout_pause, "Paused: steps under way finish, no new one starts.")


@login_required
@require_POST
def rollout_resume(request, pk):
    return _control(request, pk, services.rollout_resume, "Resumed.")


@login_required
@require_POST
def rollout_abort(request, pk):
    rollback = request.POST.get("rollback") == "1"
    return _control(request, pk, services.rollout_abort, "Aborting: hosts not rebooted yet are skipped"
                    + ("; updated hosts are rolled back." if rollback else "."), rollback=rollback)


@login_required
def stage_policy(request, pk):
    """A stage's rollout policy: everyone who sees the stage reads it; team admins change it."""
    stage = get_stage_for_rollouts(request.user, pk)
    policy = services.policy_for(stage)
    can_admin = can(request.user, stage.team, Action.ADMIN)
    form = PolicyForm(instance=policy, initial={"windows": windows_text(policy.as_data()["windows"]) if policy.pk
                                                else ""})
    if request.method == "POST":
        stage = get_stage_for_rollouts(request.user, pk, action=Action.ADMIN)
        form = PolicyForm(request.POST, instance=services.policy_for(stage))
        if form.is_valid():
            fields = {name: form.cleaned_data[name] for name in PolicyForm.Meta.fields}
            try:
                services.policy_save(stage=stage, user=request.user, fields=fields,
                                     windows=form.cleaned_data["windows"], request=request)
            except ValidationError as exc:
                form.add_error(None, exc.messages[0])
            else:
                messages.success(request, f"Saved the rollout policy of {stage.name}.")
                return redirect("rollouts:policy", stage.pk)
    rollouts = Rollout.objects.filter(stage=stage).select_related("run")[:10]
    # Where the stage's hosts stand: an update found by `bootc upgrade --check` and not staged yet, staged, or applied
    # (they boot what the stage holds), in one query.
    counts = services.stage_hosts(stage).aggregate(
        total=Count("id"), available=Count("id", filter=~Q(update_digest="") & Q(staged_digest="")),
        staged=Count("id", filter=~Q(staged_digest="")), applied=Count("id", filter=Q(state=HostState.UP_TO_DATE)))
    return render(request, "rollouts/stage_policy.html", {"stage": stage, "form": form, "can_admin": can_admin,
                                                          "rollouts": rollouts, "policy": policy, "counts": counts})


@login_required
def rollout_start(request, pk):
    stage = get_stage_for_rollouts(request.user, pk, action=Action.OPERATE)
    hosts = services.stage_hosts(stage).exclude(host_key="")
    # What the stage's tags hold now, to pick from.
    references = sorted({h.tracked_image or h.spec_image for h in hosts if h.tracked_image or h.spec_image})
    held = ReferenceDigest.objects.filter(reference__in=references, architecture="").order_by("reference")
    form = StartForm(request.POST or None, initial={"reference": held[0].reference if held else "",
                                                    "digest": held[0].digest if held else ""})
    if request.method == "POST" and form.is_valid():
        try:
            rollout = services.rollout_start(stage=stage, user=request.user, request=request,
                                             reference=form.cleaned_data["reference"],
                                             digest=form.cleaned_data["digest"], switch=form.cleaned_data["switch"])
        except services.RolloutError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Rollout #{rollout.pk} started.")
            return redirect(rollout)
    return render(request, "rollouts/rollout_start.html", {"stage": stage, "form": form, "held": held,
                                                           "host_count": hosts.count()})


@login_required
@require_GET
def promotion_rollout(request, pk):
    """The promotion card's link to the rollout it started (checked with the promotion's own access helper)."""
    promotion = get_promotion_for_user(request.user, pk)
    rollouts = Rollout.objects.filter(promotion=promotion).select_related("run")
    return render(request, "rollouts/_promotion_rollout.html", {"promotion": promotion, "rollouts": rollouts})


FLEET_ROLLOUTS_SHOWN = 10


@login_required
@require_GET
def fleet_rollouts(request):
    """On the fleet view: the rollouts under way that the user may read (of the team chosen, if one is), each with how
    many of its hosts boot its target and how many have it staged, as their last status says."""
    rollouts = Rollout.objects.visible_to(request.user).active().select_related("stage", "team", "run")
    team = current_team(request)
    if team is not None:
        rollouts = rollouts.filter(team=team)
    shown = []
    for rollout in rollouts[:FLEET_ROLLOUTS_SHOWN]:
        targets = sorted({rollout.digest, *(rollout.digests or {}).values()} - {""})
        counts = RolloutHost.objects.filter(rollout=rollout).aggregate(
            total=Count("id"), on_target=Count("id", filter=Q(host__booted_digest__in=targets)),
            staged=Count("id", filter=Q(host__staged_digest__in=targets) & ~Q(host__booted_digest__in=targets)))
        shown.append((rollout, counts))
    return render(request, "rollouts/_fleet_rollouts.html", {"shown": shown})


@login_required
@require_GET
def host_rollouts(request, pk):
    """On a host's page: whether it follows its stage's rollouts automatically or keeps bootc's own timer, and the
    rollouts that acted on it (checked with the host's own access helper)."""
    host = get_host_for_user(request.user, pk)
    policy = RolloutPolicy.objects.filter(stage_id=host.stage_id).first() if host.stage_id else None
    rows = RolloutHost.objects.filter(host=host).select_related("rollout").order_by("-rollout__created_at")[:5]
    return render(request, "rollouts/_host_rollouts.html", {"host": host, "policy": policy, "rows": rows})
