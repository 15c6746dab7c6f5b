"""What changed on hosts at runtime, and what their stages say of it: a host's reading on demand, its changed files'
diffs, the proposed revision that folds the changes back into the image, the fleet's common changes per stage, and a
stage's runtime policy (allowed, warned, forbidden). Every view asks `hosts.access` / `builds.releases.access` first."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import transaction
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from builds import compare
from builds.releases.access import get_stage_for_user
from builds.releases.models import Stage
from portal.access import can
from portal.models import Action
from portal.views import current_team

from . import fleet as fleet_tallies
from . import foldback, runtime, services, tasks
from .access import get_host_files_for_user, get_host_for_user
from .forms import RuntimePolicyForm
from .models import Host, HostRuntime, RuntimeDrift, RuntimePolicy
from .tallies import tally_counts
from .views import _visible_teams


@login_required
@require_POST
def host_runtime_read(request, pk):
    """Read what changed on the host now (files in /etc, packages, the /usr overlay), instead of at its hourly turn."""
    host = get_host_for_user(request.user, pk, action=Action.OPERATE)
    if host.reports_in or not host.trusted:
        messages.error(request, f"{host} is not reached over SSH with a confirmed key, so the portal cannot read it.")
        return redirect(host)
    transaction.on_commit(lambda: tasks.runtime_read_task.delay(host.pk))
    messages.info(request, f"Reading what changed on {host}; it shows here in a few seconds.")
    return redirect(host)


@login_required
@require_GET
def host_runtime_files(request, pk):
    """The changed /etc files of the host against its image's version: a diff each (secrets masked when read), or why
    there is none. For the team's members (the panel loads it when opened)."""
    host = get_host_files_for_user(request.user, pk)
    found = HostRuntime.objects.filter(host=host).first()
    context = {"host": host, "runtime": found, "files": _runtime_files(found)}
    template = "hosts/_host_runtime_files.html" if request.htmx and not request.htmx.boosted else \
        "hosts/host_runtime_files.html"
    return render(request, template, context)


def _runtime_files(found):
    """[{path, kind, entry, lines: [(css class, text)]}] of a reading's changed paths, in the list's order."""
    if found is None:
        return []
    rows = []
    for kind, path in found.etc_changes:
        entry = (found.etc_files or {}).get(path)
        lines = []
        for line in (entry or {}).get("diff", "").splitlines():
            css = ("diff-head" if line.startswith(("---", "+++")) else "diff-hunk" if line.startswith("@@")
                   else "diff-add" if line.startswith("+") else "diff-del" if line.startswith("-") else "")
            lines.append((css, line))
        rows.append({"path": path, "kind": kind, "entry": entry, "lines": lines})
    return rows


@login_required
def host_runtime_propose(request, pk):
    """A proposed revision that folds the host's runtime changes back into its image, shown as a diff against the
    current revision with what it left out and why; saved only when a developer of the team confirms."""
    host = get_host_files_for_user(request.user, pk)
    try:
        definition, current, proposal = services.runtime_proposal(host=host, user=request.user)
    except services.FoldBackError as exc:
        return render(request, "hosts/host_runtime_propose.html", {"host": host, "refusal": str(exc)})
    reviewed = foldback.proposal_sha256(proposal, current)
    errors = []
    if request.method == "POST":
        try:
            revision = services.runtime_fold_back(host=host, user=request.user, request=request,
                                                  reviewed_sha256=request.POST.get("reviewed", ""))
        except services.FoldBackError as exc:
            errors = [str(exc)]
        except ValidationError as exc:
            errors = [message for messages_ in exc.message_dict.values() for message in messages_] \
                if hasattr(exc, "message_dict") else exc.messages
        else:
            messages.success(request, f"Saved {revision}: build it to fold {host}'s changes into the image.")
            return redirect(revision)
    rows = compare.diff_rows(current.containerfile, proposal.containerfile)
    added_files = sorted(set(proposal.context_files) - {f.path for f in current.context_files.all()})
    return render(request, "hosts/host_runtime_propose.html", {
        "host": host, "definition": definition, "current": current, "proposal": proposal, "rows": rows,
        "reviewed": reviewed, "errors": errors, "added_files": added_files,
        "stats": compare.diff_stats(rows)})




@login_required
@require_GET
def fleet_runtime(request):
    """What changed on hosts since they booted their images, per stage: how many hosts were read and changed, and the
    changes most common among them ("/etc/chrony.conf on 40 of 200 hosts"), counted by the database in a fixed number
    of queries."""
    teams = _visible_teams(request.user)
    team = current_team(request)
    if team is not None:
        teams = [team]
    team_names = {t.pk: t.name for t in teams}
    stages = {s.pk: s for s in Stage.objects.filter(team__in=list(team_names)).only("name", "position").order_by()}
    groups = fleet_tallies.runtime_groups(team_names, stages, tally_counts(list(team_names)))
    policies = RuntimePolicy.objects.for_stages(stages)
    for group in groups:
        policy = policies.get(group["stage_id"])
        group["drift"] = policy.drift if policy is not None else RuntimeDrift.ALLOWED
    return render(request, "hosts/fleet_runtime.html", {"groups": groups, "team": team,
                                                        "top": fleet_tallies.RUNTIME_TOP})


@login_required
def stage_runtime_policy(request, pk):
    """What a stage says of its hosts changing at runtime: the team's members read it, with the stage's non-compliant
    hosts; team admins change it (audited)."""
    stage = get_stage_for_user(request.user, pk)
    policy = RuntimePolicy.objects.filter(stage=stage).first() or RuntimePolicy(stage=stage)
    form = RuntimePolicyForm(instance=policy)
    if request.method == "POST":
        stage = get_stage_for_user(request.user, pk, action=Action.ADMIN)
        form = RuntimePolicyForm(request.POST, instance=policy)
        if form.is_valid():
            try:
                services.runtime_policy_set(stage=stage, user=request.user, drift=form.cleaned_data["drift"],
                                            rollouts=form.cleaned_data["rollouts"], request=request)
            except ValidationError as exc:
                form.add_error(None, exc.messages[0])
            else:
                messages.success(request, f"Saved what {stage.name} says of runtime changes: "
                                          f"{RuntimeDrift(form.cleaned_data['drift']).label.lower()}.")
                return redirect("hosts:stage_runtime_policy", stage.pk)
    hosts = Host.objects.filter(stage=stage)
    changed = hosts.changed_at_runtime()
    return render(request, "hosts/stage_runtime_policy.html", {
        "stage": stage, "policy": policy, "form": form, "can_admin": can(request.user, stage.team, Action.ADMIN),
        "hosts": hosts.count(), "changed": changed.count(),
        "non_compliant": list(hosts.non_compliant().select_related("runtime").order_by("name")[:50]),
        "undoes": runtime.RESET_UNDOES, "keeps": runtime.RESET_KEEPS})
