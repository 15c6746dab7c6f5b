"""Host pages: the fleet list, a host's page and timeline, actions with their confirmation, and the fleet views
(drift, per stage, who runs which digest); a team's inventory and trust are in `views_inventory.py`. Every view asks
`hosts.access` / `portal.access` first."""

import json
from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET, require_POST

from builds.models import Build, ImageDefinition
from builds.releases.models import Stage
from portal import registry
from portal.access import can, user_teams, user_teams_where
from portal.models import Action, Team
from portal.views import _viewer_context, current_team

from . import actions, bootstrip, services
from . import fleet as fleet_tallies
from .access import get_host_for_user
from .connect import HostError
from .forms import HostFilter, SwitchForm
from .models import (
    PROBLEM_STATES,
    ActionKind,
    Host,
    HostEvent,
    HostRuntime,
    HostSnapshot,
    HostState,
    ReferenceDigest,
)
from .runtime import compliance as runtime_compliance
from .runtime import summary as runtime_summary
from .tallies import tally_counts

PAGE_SIZE = 50


def _visible_teams(user):
    """The teams whose hosts the user reads, by name: their own (read once per request), every team for help-desk users
    and superusers."""
    if user.is_helpdesk and not user.is_superuser:
        return list(Team.objects.all())
    return user_teams(user)


# --- The list --------------------------------------------------------------------------------------------------------


@login_required
def host_list(request):
    base = Host.objects.visible_to(request.user)
    teams = _visible_teams(request.user)
    data = request.GET.copy()
    team = current_team(request)
    if "team" not in data and team is not None:
        data["team"] = str(team.pk)
    host_filter = HostFilter(data, queryset=base, teams=teams)
    hosts = host_filter.qs if host_filter.is_valid() else base.none()
    hosts = hosts.select_related("team", "stage").only(
        "name", "address", "port", "labels", "tracked_image", "spec_image", "state", "drifting", "booted_digest",
        "booted_version", "staged_digest", "staged_version", "rollback_digest", "rollback_queued", "update_digest",
        "status_at", "last_poll_at", "last_error", "team__name", "team__slug", "stage__name", "host_key",
        "expected_digest",
    ).order_by("name", "id")
    team_ids = _scope_team_ids(teams, data.get("team", ""))
    # The same rows as the access helper's subquery, spelt as the ids: PostgreSQL then walks the list's (name, id)
    # index in order for a page (2 ms for page 150 of 100,000 hosts) instead of sorting every visible host (160 ms).
    hosts = hosts.filter(team_id__in=team_ids)
    tally = tally_counts(team_ids)
    counts = {}
    for (_, _, state, _), n in tally.items():
        counts[state] = counts.get(state, 0) + n
    drifting = sum(n for (_, _, _, is_drifting), n in tally.items() if is_drifting)
    # "Only with an update available" and "only not enforcing signatures" count from the tally's own rows.
    only = data.get("only")
    listed = (tally_counts(team_ids, update_available=True) if only == "update"
              else tally_counts(team_ids, enforcing=False) if only == "unenforced" else tally)
    page = _paginate(request, hosts, host_filter, listed, teams)
    context = {
        "filter": host_filter, "page": page,
        "state_counts": [(value, label, counts.get(value, 0)) for value, label in HostState.choices if counts.get(value)],
        "drifting": drifting, "total": sum(counts.values()),
        "admin_teams": user_teams_where(request.user, Action.ADMIN), "now": timezone.now(),
        "key_teams": (user_teams(request.user) if team is None else [team])[:3]
        if not request.htmx else [],
        "any_hosts": base.exists() if not page.object_list else True,
    }
    template = "hosts/_host_table.html" if request.htmx and not request.htmx.boosted else "hosts/host_list.html"
    return render(request, template, context)


def _scope_team_ids(teams, team_value):
    """The ids of the teams a list covers: the one picked (if the user sees it), else every team the user sees."""
    ids = [team.pk for team in teams]
    if team_value.isdigit() and int(team_value) in ids:
        return [int(team_value)]
    return ids


LIST_COUNT_CAP = 10_000


class _CountedPaginator(Paginator):
    """A paginator told its count (from the tally, or capped), so that no page counts the whole fleet."""

    def __init__(self, object_list, per_page, *, count, capped=False):
        super().__init__(object_list, per_page)
        self._known_count = count
        self.capped = capped

    @property
    def count(self):
        return self._known_count

    def page(self, number):
        """The page's rows found by id first: OFFSET 7,450 then walks the list's index alone (it holds the team the
        rows are filtered by) instead of joining teams and stages for every row it skips; only the 50 shown rows are
        read and joined."""
        page = super().page(number)
        page.object_list = self.object_list.filter(pk__in=page.object_list.values("pk"))
        return page


def _paginate(request, hosts, host_filter, tally, teams):
    """Filters the tally can answer (team, stage, state, and "only with an update available" or "only not enforcing
    signatures", for which `tally` holds just those hosts) take their count from it; a name, address or label search,
    and "only changed at runtime" or "only non-compliant" (kept with each host's reading, not in the tally), count at
    most LIST_COUNT_CAP + 1 rows (the page says "more than 10,000: narrow the filter")."""
    data = host_filter.form.cleaned_data if host_filter.is_valid() else {}
    if data.get("q") or data.get("label") or data.get("only") in ("runtime", "noncompliant") or not host_filter.is_valid():
        count = hosts[: LIST_COUNT_CAP + 1].count()
        paginator = _CountedPaginator(hosts, PAGE_SIZE, count=min(count, LIST_COUNT_CAP),
                                      capped=count > LIST_COUNT_CAP)
    else:
        stage_ids = None
        if data.get("stage") == "-":
            stage_ids = {None}
        elif data.get("stage"):
            stage_ids = set(Stage.objects.filter(team_id__in=[team.pk for team in teams], name=data["stage"])
                            .values_list("pk", flat=True))
        state = data.get("state")
        count = sum(n for (_, stage_id, host_state, is_drifting), n in tally.items()
                    if (stage_ids is None or stage_id in stage_ids) and _state_matches(state, host_state, is_drifting))
        paginator = _CountedPaginator(hosts, PAGE_SIZE, count=count)
    return paginator.get_page(request.GET.get("page"))


def _state_matches(wanted, state, drifting):
    if not wanted:
        return True
    if wanted == "drifting":
        return drifting
    if wanted == "problems":
        return state in PROBLEM_STATES
    return state == wanted


# --- One host --------------------------------------------------------------------------------------------------------


def _host_context(request, host):
    events = list(HostEvent.objects.filter(host=host).select_related("user", "action", "action__run")[:100])
    status = host.status or {}
    can_operate = can(request.user, host.team, Action.OPERATE)
    can_admin = can(request.user, host.team, Action.ADMIN)
    active = host.actions.running().select_related("run", "requested_by").first()
    return {
        "host": host, "events": events, "status": status,
        "entries": _entries(status),
        "can_operate": can_operate, "can_admin": can_admin,
        # Stages, builds and definitions are the team's: help-desk users (who read every team's hosts) do not see them.
        "sees_team": can(request.user, host.team, Action.VIEW),
        "can_develop": can(request.user, host.team, Action.DEVELOP),
        "active_action": active,
        "actions": _action_buttons(host) if can_operate else [],
        "recent_actions": host.actions.select_related("run", "requested_by")[:10],
        "snapshot_count": HostSnapshot.objects.filter(host=host).count(),
        "unreadable_snapshot": HostSnapshot.objects.filter(host=host, parsed__isnull=True).only("pk").first()
        if host.state == HostState.UNREADABLE else None,
        "expected_digests": list(ReferenceDigest.objects.filter(reference=host.reference)) if host.reference else [],
        "builds": builds_by_digest(request.user, [host.booted_digest, host.staged_digest, host.rollback_digest,
                                                  host.expected_digest]),
        "now": timezone.now(),
        **_runtime_context(host),
        "strip": bootstrip.boot_strip(host),
    }


def _runtime_context(host):
    found = HostRuntime.objects.filter(host=host).first()
    drift_rule, non_compliant = runtime_compliance(host, found)
    return {"runtime": found, "runtime_summary": runtime_summary(found) if found else "", "drift_rule": drift_rule,
            "non_compliant": non_compliant, "reset_image": actions.reset_image(host)}


def builds_by_digest(user, digests):
    """{digest: Build} for the builds the user may see that produced these digests (links from hosts to builds)."""
    digests = [d for d in digests if d]
    if not digests:
        return {}
    builds = Build.objects.visible_to(user).filter(digest__in=digests).select_related("definition")
    return {build.digest: build for build in builds.order_by("run__created_at")}


def _entries(status):
    out = []
    for slot, label in (("staged", "Staged"), ("booted", "Booted"), ("rollback", "Rollback")):
        entry = status.get(slot)
        if entry:
            out.append((slot, label, entry))
    for entry in status.get("other_deployments") or ():
        out.append(("other", "Pinned", entry))
    return out


def _action_buttons(host):
    buttons = [
        (ActionKind.UPGRADE_CHECK, "arrow-repeat", "outline-secondary"),
        (ActionKind.UPGRADE_STAGE, "download", "outline-primary"),
        (ActionKind.UPGRADE_APPLY, "arrow-up-circle", "outline-primary"),
        (ActionKind.SWITCH, "shuffle", "outline-primary"),
        (ActionKind.ROLLBACK, "arrow-counterclockwise", "outline-warning"),
        (ActionKind.ROLLBACK_APPLY, "arrow-counterclockwise", "outline-warning"),
        (ActionKind.REBOOT, "power", "outline-danger"),
    ]
    out = []
    for kind, icon, style in buttons:
        disabled = ""
        if kind in (ActionKind.ROLLBACK, ActionKind.ROLLBACK_APPLY) and not host.rollback_digest:
            disabled = "No rollback deployment"
        out.append({"kind": kind, "label": ActionKind(kind).label, "icon": icon, "style": style, "disabled": disabled,
                    "url": reverse("hosts:host_action", args=[host.pk, kind])})
    return out


ACTION_LOG_SHOWN_FOR = timedelta(minutes=15)


def _watched_action(host):
    """The action whose live log the host page shows: the one running now, or the last one if it ended recently (so
    whoever started it sees how it ended, and what the host booted, on the same page)."""
    action = host.actions.select_related("run", "requested_by").first()
    if action is None or not (action.active or action.run.is_active or (
            action.run.finished_at and action.run.finished_at > timezone.now() - ACTION_LOG_SHOWN_FOR)):
        return None
    return action


@login_required
def host_detail(request, pk):
    host = get_host_for_user(request.user, pk)
    context = _host_context(request, host)
    if request.htmx and not request.htmx.boosted:
        return render(request, "hosts/_host_live.html", context)
    watched = _watched_action(host)
    if watched is not None:
        context.update({"watched": watched, "run": watched.run, **_viewer_context(watched.run),
                        "can_cancel": watched.run.stoppable() and context["can_operate"]})
    context["rollouts_url"] = registry.fragment_url("host.rollouts", host.pk)
    return render(request, "hosts/host_detail.html", context)


@login_required
def host_raw(request, pk):
    """The last raw status, and the recent snapshots."""
    host = get_host_for_user(request.user, pk)
    snapshots = Paginator(HostSnapshot.objects.filter(host=host).only("taken_at", "error", "status_hash"), 25)
    return render(request, "hosts/host_raw.html", {"host": host, "page": snapshots.get_page(request.GET.get("page")),
                                                   "pretty": _pretty(host.raw_status)})


@login_required
@require_GET
def host_snapshot_output(request, pk, snapshot):
    """What the host printed for one snapshot, byte for byte, as a download (the page shows it as text, where a NUL or
    a byte that is not UTF-8 reads as U+FFFD)."""
    host = get_host_for_user(request.user, pk)
    found = HostSnapshot.objects.filter(host=host, pk=snapshot).only("raw", "raw_bytes", "taken_at").first()
    if found is None:
        raise Http404("No such snapshot of this host.")
    data = bytes(found.raw_bytes) or found.raw.encode()
    response = HttpResponse(data, content_type="application/octet-stream")
    response["Content-Disposition"] = content_disposition_header(
        True, f"{host.name}-bootc-status-{found.taken_at:%Y%m%dT%H%M%SZ}.out")
    return response


def _pretty(raw):
    """Indented JSON for reading; anything else exactly as the host printed it."""
    try:
        return json.dumps(json.loads(raw), indent=2, sort_keys=True, ensure_ascii=False)
    except (ValueError, RecursionError):
        return raw


@login_required
@require_POST
def host_poll(request, pk):
    host = get_host_for_user(request.user, pk, action=Action.OPERATE)
    if host.reports_in:
        messages.info(request, f"{host} reports in by itself (every minute); the portal does not log in to it.")
        return redirect(host)
    if not host.trusted:
        messages.error(request, "Confirm the host key first: nothing is sent to a host whose key nobody confirmed.")
        return redirect("hosts:host_trust", host.pk)
    services._enqueue_poll([host.pk])
    messages.info(request, f"Reading {host}'s status now; the page updates when it answers.")
    return redirect(host)


# --- Actions ---------------------------------------------------------------------------------------------------------


@login_required
def host_action(request, pk, kind):
    """GET: the confirmation, saying what will happen. POST: do it, then watch its log on the host's page."""
    host = get_host_for_user(request.user, pk, action=Action.OPERATE)
    if kind not in ActionKind.values:
        raise Http404("No such action.")
    needs_image = kind in (ActionKind.SWITCH, ActionKind.SWITCH_APPLY)
    form = SwitchForm(request.POST or None, initial={"image": host.reference}) if needs_image else None
    error = None
    if request.method == "POST":
        if form is None or form.is_valid():
            image = form.cleaned_data["image"] if form is not None else ""
            try:
                action = actions.host_action_request(host=host, kind=kind, user=request.user, image=image,
                                                      request=request)
            except HostError as exc:
                error = str(exc)
            else:
                if host.reports_in:
                    messages.success(request, f"{action.get_kind_display()} on {host} waits for the host's agent, "
                                              "which asks for it with its next report (within a minute); its log "
                                              "streams below once it starts.")
                else:
                    messages.success(request, f"{action.get_kind_display()} on {host} started; its log streams below.")
                return redirect(reverse("hosts:host_detail", args=[host.pk]) + "#action-log")
    effect = actions.action_effect(host, kind, form["image"].value() if form is not None else "")
    active = host.actions.running().select_related("requested_by", "run").first()
    return render(request, "hosts/action_confirm.html", {
        "host": host, "kind": kind, "label": ActionKind(kind).label, "effect": effect, "form": form, "error": error,
        "active_action": active, "repositories": sorted(actions.team_repositories(host.team)) if needs_image else [],
    }, status=400 if error else 200)


# --- Fleet views -----------------------------------------------------------------------------------------------------


@login_required
def drift_list(request):
    base = Host.objects.visible_to(request.user)
    teams = _visible_teams(request.user)
    data = request.GET.copy()
    team = current_team(request)
    if "team" not in data and team is not None:
        data["team"] = str(team.pk)
    host_filter = HostFilter(data, queryset=base.filter(drifting=True), teams=teams)
    hosts = (host_filter.qs if host_filter.is_valid() else base.none()).select_related("team", "stage").order_by(
        "team__name", "stage__position", "name")
    page = Paginator(hosts, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "hosts/drift_list.html", {"filter": host_filter, "page": page, "now": timezone.now()})


@login_required
def fleet(request):
    """Host counts per stage (up to date, staged, drifting, ...), the rollouts under way (a rollouts fragment), and
    which digests the hosts of each repository run (paged by repository), all from the maintained tallies: no page
    counts the fleet."""
    teams = _visible_teams(request.user)
    team = current_team(request)
    if team is not None:
        teams = [team]
    team_names = {t.pk: t.name for t in teams}
    found = fleet_tallies.tallies(sorted(team_names, key=lambda pk: team_names[pk]), request.GET.get("page"))
    stages = {s.pk: s for s in Stage.objects.filter(team__in=list(team_names)).only("name", "position").order_by()}
    page = fleet_tallies.page_of(found)
    shown, others = fleet_tallies.digest_rows(found, page, team_names)
    repositories = {repository for (_, repository), _ in shown}
    definitions = {d.repository: d for d in ImageDefinition.objects.visible_to(request.user)
                   .filter(repository__in=repositories)}
    builds = builds_by_digest(request.user, [row["digest"] for _, digest_rows in shown for row in digest_rows])
    stage_order = {}
    for stage in stages.values():
        stage_order[stage.name] = min(stage.position, stage_order.get(stage.name, stage.position))
    spreads = {key: fleet_tallies.version_spread(rows, stage_order) for key, rows in shown}
    per_stage = fleet_tallies.per_stage(found.counts, team_names, stages, found.available, found.enforcing)
    return render(request, "hosts/fleet.html", {"per_stage": per_stage, "groups": shown, "others": others, "page": page,
                                                "team": team, "definitions": definitions, "builds": builds,
                                                "rollouts_url": registry.fragment_url("fleet.rollouts"), "spreads": spreads})


@login_required
def digest_hosts(request, digest):
    """Who runs this image: hosts booting `digest` (links from builds land here)."""
    hosts = Host.objects.visible_to(request.user).filter(Q(booted_digest=digest) | Q(staged_digest=digest)
                                                          | Q(rollback_digest=digest)).select_related("team", "stage")
    page = Paginator(hosts.order_by("name"), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "hosts/digest_hosts.html", {"digest": digest, "page": page,
                                                        "now": timezone.now(),
                                                        "build": builds_by_digest(request.user, [digest]).get(digest)})
