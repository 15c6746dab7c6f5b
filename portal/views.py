"""The core's pages: the dashboard and team switcher, teams and members, the audit trail, runs and their logs (and
the explanation of a pasted log), health and the error pages. Signing in and the second factor are
portal/views_account.py, a team's webhooks portal/views_notifications.py."""

import hmac
import logging

from django.apps import apps
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, RequestDataTooBig, ValidationError
from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.http import Http404, HttpResponse, HttpResponseRedirect, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from . import failures, logarchive, logsink, registry, services
from . import health as health_checks
from . import metrics as portal_metrics
from .access import can, get_run_for_user, get_team_for_user, role_allows, team_roles, user_teams
from .forms import AuditFilter, ExplainLogForm, MemberAddForm, RoleForm, TeamForm
from .logtext import cut_for_display
from .models import ROLE_ACTIONS, Action, AuditEvent, Membership, Role, Run, Team, action_to_cancel

log = logging.getLogger(__name__)

# --- Dashboard and team switcher -------------------------------------------------------------------------------------


def current_team(request):
    """The team the switcher points at, if the user may still see it; None means all of the user's teams."""
    team_id = request.session.get("team_id")
    if not team_id:
        return None
    return next((team for team in user_teams(request.user) if team.pk == team_id), None)


@login_required
def dashboard(request):
    """Runs, recent activity and the tiles the feature apps registered (portal.registry)."""
    team = current_team(request)
    teams = user_teams(request.user) if team is None else [team]  # read once per request, with the roles
    # Help-desk users read every team's hosts and host runs: across all teams, their dashboard counts and lists those
    # too (the querysets' visible_to keeps everything else to their own teams).
    across_teams = request.user.is_helpdesk and team is None
    runs = Run.objects.visible_to(request.user)
    if not across_teams:
        runs = runs.filter(team__in=teams)
    events = AuditEvent.objects.visible_to(request.user).filter(team__in=teams).select_related("actor")[:10]
    has_teams = bool(teams)
    helpdesk_only = across_teams and not has_teams
    tiles = []
    for group in registry.tile_groups():
        if helpdesk_only and not group.across_teams:
            continue
        counts = group.count(request.user, Team.objects.all() if across_teams and group.across_teams else teams)
        tiles += [{"label": tile.label, "icon": tile.icon, "url_name": tile.url_name, "value": counts.get(tile.key, 0)}
                  for tile in group.tiles]
    run_lists = [entry for entry in registry.run_lists() if entry.across_teams or not helpdesk_only]
    return render(
        request,
        "portal/dashboard.html",
        {"team": team, "runs": runs.select_related("team", "started_by")[:10], "events": events, "tiles": tiles,
         "active_runs": runs.active().count(), "run_list": run_lists[0] if run_lists else None,
         "panels": [panel.template for panel in registry.panels()],
         "has_teams": has_teams or across_teams, "helpdesk_only": helpdesk_only},
    )


@login_required
@require_POST
def switch_team(request):
    slug = request.POST.get("team", "")
    if slug:
        team = get_team_for_user(request.user, slug)
        request.session["team_id"] = team.pk
    else:
        request.session.pop("team_id", None)
    return HttpResponseRedirect(_next_path(request) or reverse("portal:dashboard"))


def _next_path(request):
    """The POST's `next`, when it is a path of this site (redirect() would take a bare word such as "ok" for a view
    name: a 500); else ""."""
    target = request.POST.get("next", "")
    if not target.startswith("/") or not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return ""
    return target


# --- Teams and members -----------------------------------------------------------------------------------------------


@login_required
def team_list(request):
    return _team_list_page(request, TeamForm() if request.user.is_superuser else None)


def _team_list_page(request, form, status=200):
    """The teams page: each team with the user's role and its member count (people, not team tokens), the members read
    in one query for all the teams."""
    teams = Team.objects.visible_to(request.user).prefetch_related(
        Prefetch("memberships", queryset=Membership.objects.people()))
    roles = team_roles(request.user)
    rows = [(team, roles.get(team.pk)) for team in teams]
    return render(request, "portal/team_list.html", {"rows": rows, "form": form}, status=status)


@login_required
@require_POST
def team_create(request):
    if not request.user.is_superuser:
        raise PermissionDenied("Only portal administrators create teams.")
    form = TeamForm(request.POST)
    if not form.is_valid():
        return _team_list_page(request, form, status=400)
    team = services.team_create(name=form.cleaned_data["name"], description=form.cleaned_data["description"],
                                actor=request.user, request=request)
    messages.success(request, f"Team {team} created.")
    return redirect(team)


@login_required
def team_detail(request, slug):
    team = get_team_for_user(request.user, slug)
    is_admin = can(request.user, team, Action.ADMIN)
    admin_needs_second_factor = not is_admin and role_allows(request.user, team, Action.ADMIN)
    memberships = Membership.objects.filter(team=team).people().select_related("user").order_by("user__username")
    return render(
        request,
        "portal/team_detail.html",
        {
            "team": team,
            "links": [(link, reverse(link.url_name, args=[team.slug])) for link in registry.team_links()
                      if can(request.user, team, link.action)],
            "memberships": memberships,
            "is_admin": is_admin,
            "admin_needs_second_factor": admin_needs_second_factor,
            "add_form": MemberAddForm(team=team) if is_admin else None,
            "roles": Role.choices,
            "role_help": _role_help(),
        },
    )


def _role_help():
    return [(Role(role).label, [Action(a).label for a in Action if a in actions]) for role, actions in ROLE_ACTIONS.items()]


@login_required
@require_POST
def member_add(request, slug):
    team = get_team_for_user(request.user, slug, action=Action.ADMIN)
    form = MemberAddForm(request.POST)
    if form.is_valid():
        user = form.cleaned_data["user"]
        if Membership.objects.filter(team=team, user=user).exists():
            messages.warning(request, f"{user.username} is already in {team}; change their role in the list instead.")
        else:
            services.membership_set(team=team, user=user, role=form.cleaned_data["role"], actor=request.user,
                                    request=request)
            messages.success(request, f"Added {user.username} to {team} as {form.cleaned_data['role']}.")
    else:
        for error in form.errors.get("user", []) + form.errors.get("role", []):
            messages.error(request, error)
    return redirect(team)


@login_required
@require_POST
def member_role(request, slug, user_id):
    team = get_team_for_user(request.user, slug, action=Action.ADMIN)
    membership = get_object_or_404(Membership, team=team, user_id=user_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Pick one of the listed roles.")
        return redirect(team)
    try:
        services.membership_set(team=team, user=membership.user, role=form.cleaned_data["role"], actor=request.user,
                                request=request)
    except (PermissionDenied, ValidationError) as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, f"{membership.user.username} is now {form.cleaned_data['role']} in {team}.")
    return redirect(team)


@login_required
@require_POST
def member_remove(request, slug, user_id):
    team = get_team_for_user(request.user, slug, action=Action.ADMIN)
    membership = get_object_or_404(Membership, team=team, user_id=user_id)
    try:
        services.membership_remove(team=team, user=membership.user, actor=request.user, request=request)
    except PermissionDenied as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, f"Removed {membership.user.username} from {team}.")
    return redirect(team)


def error_text(exc):
    """What a refusal says, for a message on the page: a ValidationError's messages, or the exception's text. Every app's
    views use it."""
    if isinstance(exc, ValidationError):
        return " ".join(exc.messages)
    return str(exc)


# --- Audit -----------------------------------------------------------------------------------------------------------


@login_required
def audit_list(request):
    base = AuditEvent.objects.visible_to(request.user).select_related("actor", "team")
    teams = Team.objects.visible_to(request.user)
    team = current_team(request)
    data = request.GET.copy()
    if "team" not in data and team is not None:
        data["team"] = str(team.pk)
    audit_filter = AuditFilter(data, queryset=base, teams=teams)
    events = audit_filter.qs if audit_filter.is_valid() else base.none()
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    template = "portal/_audit_table.html" if request.htmx else "portal/audit_list.html"
    return render(request, template, {"filter": audit_filter, "page": page, "object_urls": _object_urls(page)})


@login_required
@require_POST
def audit_verify(request):
    """Check the whole hash chain against the checkpoints now, as `manage.py audit_verify` does (portal admins: the
    chain spans every team)."""
    if not request.user.is_superuser:
        raise PermissionDenied("Only portal administrators verify the whole audit chain.")
    intact, text = services.audit_chain_report()
    if request.htmx:
        return render(request, "portal/_audit_verify.html", {"intact": intact, "text": text})
    (messages.success if intact else messages.error)(request, text)
    return redirect("portal:audit_list")


def _object_urls(events):
    """{event pk: URL of the object it is about}, for the events whose object still exists and has a page: one query
    per kind of object on the page. The page itself checks who may open it."""
    wanted = {}
    for event in events:
        if event.object_type and event.object_id:
            wanted.setdefault(event.object_type, set()).add(event.object_id)
    found = {}
    for object_type, ids in wanted.items():
        try:
            model = apps.get_model(object_type)
        except (LookupError, ValueError):
            continue
        if not hasattr(model, "get_absolute_url"):
            continue
        try:
            objects = model._default_manager.in_bulk([model._meta.pk.to_python(i) for i in ids])
        except ValidationError:  # an id of another shape (an old event, a name): no link
            continue
        for pk, obj in objects.items():
            try:
                found[(object_type, str(pk))] = obj.get_absolute_url()
            except NoReverseMatch:
                continue
    return {event.pk: found[(event.object_type, event.object_id)] for event in events
            if (event.object_type, event.object_id) in found}


# --- Runs ------------------------------------------------------------------------------------------------------------
# The run page and its log viewer (static/portal/logviewer.js; protocol and limits in docs/logs.md). Every view reads the
# log a few chunks at a time through portal.logsink, so no request holds more than a few chunks of a log in memory.

TAIL_LINES = 250  # lines rendered with the page (a screen shows about 40); earlier ones load as the viewer scrolls up
PAGE_LINES_MAX = 5000  # most lines one JSON page or one polling response carries


def _int_param(request, name, default, *, minimum=0, maximum=None):
    try:
        value = int(request.GET.get(name, default))
    except (TypeError, ValueError):
        return default
    value = max(value, minimum)
    return min(value, maximum) if maximum is not None else value


def log_rows(run, first, lines, times):
    """Rows for templates/portal/_log_lines.html: (seq, text, ms, section kind, section title, full length if cut)."""
    shown, cut = cut_for_display(lines, first, settings.RUN_LOG_DISPLAY_LINE_CHARS)
    cut = dict(cut)
    last = first + len(lines) - 1
    marks = {s.seq: s for s in logsink.sections(run, after=first - 1, before=last + 1)} if lines else {}
    rows = []
    for i, text in enumerate(shown):
        seq = first + i
        section = marks.get(seq)
        rows.append((seq, text, times[i], section.kind if section else "", section.title if section else "", cut.get(seq)))
    return rows


def _viewer_context(run):
    """What templates/portal/_log_viewer.html needs: the tail, the outline of sections, and where the log ends."""
    first, lines, times = logsink.lines_between(run, limit=TAIL_LINES, from_end=True)
    last = first + len(lines) - 1 if lines else 0
    outline = [logsink.section_entry(s) for s in logsink.sections(run)]
    return {
        "log_rows": log_rows(run, first, lines, times),
        "log_first": first if lines else 1,
        "log_last": last,
        "log_outline": outline,
        "display_line_chars": settings.RUN_LOG_DISPLAY_LINE_CHARS,
        "log_poll_ms": round(settings.RUN_LOG_POLL_SECONDS * 1000),
        "log_archive": logarchive.archive_of(run),
    }


@login_required
def run_detail(request, pk):
    run = get_run_for_user(request.user, pk)
    subject = run.subject if run.object_id else None
    return render(
        request,
        "portal/run_detail.html",
        {
            "run": run,
            "subject": subject if hasattr(subject, "get_absolute_url") else None,
            "can_cancel": run.stoppable() and can(request.user, run.team, action_to_cancel(run.kind)),
            **_viewer_context(run),
        },
    )


@login_required
@never_cache
def run_log(request, pk):
    """Lines after `after` as an htmx fragment, with the status badge and result out of band: the viewer's fallback when
    the websocket cannot connect. Answers 286 once the run has ended and every line was sent, which stops htmx polling.
    Opened as a page (a bookmark, a link copied from the network tab), it sends the reader to the run's page."""
    run = get_run_for_user(request.user, pk)
    if not request.htmx:
        return redirect(run)
    after = _int_param(request, "after", 0)
    first, lines, times = logsink.lines_between(run, after=after, limit=PAGE_LINES_MAX)
    last = first + len(lines) - 1 if lines else after
    done = run.is_finished and last >= logsink.last_seq(run)
    response = render(request, "portal/_log_lines.html",
                      {"run": run, "log_rows": log_rows(run, first, lines, times), "last_seq": last, "done": done,
                       "poll": True})
    if done:
        response.status_code = 286
    return response


@login_required
@never_cache
def run_log_lines(request, pk):
    """A page of stored lines as JSON, shaped like the websocket's "lines" message: numbered after `after` and before
    `before`, the first `limit` of them (or the last, with end=1). The viewer loads earlier lines and windows with it."""
    run = get_run_for_user(request.user, pk)
    after = _int_param(request, "after", 0)
    before = _int_param(request, "before", 0, minimum=0) or None
    limit = _int_param(request, "limit", 1000, minimum=1, maximum=PAGE_LINES_MAX)
    first, lines, times = logsink.lines_between(run, after=after, before=before, limit=limit,
                                                from_end=request.GET.get("end") == "1")
    sections = logsink.sections(run, after=first - 1, before=first + len(lines)) if lines else []
    message = logsink.lines_message(first, lines, times, list(sections))
    message["last"] = logsink.last_seq(run)
    message["archived"] = logarchive.archive_of(run) is not None
    return JsonResponse(message)


@login_required
@never_cache
def run_log_line(request, pk, seq):
    """One whole line as plain text: what the viewer's "expand" link shows for a line cut for display."""
    run = get_run_for_user(request.user, pk)
    text = logsink.line(run, seq)
    if text is None:
        raise Http404("No such line.")
    return HttpResponse(text, content_type="text/plain; charset=utf-8")


@login_required
@never_cache
def run_log_search(request, pk):
    """Search the whole log on the server: {"q", "count" (exact, lines), "seqs" (line numbers after `after`), "more"}."""
    run = get_run_for_user(request.user, pk)
    query = request.GET.get("q", "").replace("\r", " ").replace("\n", " ")[: logsink.SEARCH_MAX_QUERY]
    if not query.strip():
        return JsonResponse({"q": query, "count": 0, "seqs": [], "more": False})
    after = _int_param(request, "after", 0)
    limit = _int_param(request, "limit", 10_000, minimum=1, maximum=10_000)
    found = logsink.search(run, query, after=after, max_positions=limit + 1)
    seqs = found["seqs"][:limit]
    return JsonResponse({"q": query, "count": found["count"], "seqs": seqs, "more": len(found["seqs"]) > limit})


@login_required
def run_log_raw(request, pk):
    """The whole log as plain text (or gzip with ?gzip=1), streamed chunk by chunk."""
    run = get_run_for_user(request.user, pk)
    compressed = request.GET.get("gzip") == "1"
    name = f"run-{run.pk}.log"
    response = StreamingHttpResponse(logsink.raw(run, compressed=compressed),
                                     content_type="application/gzip" if compressed else "text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}.gz"' if compressed else f'inline; filename="{name}"'
    archive = logarchive.archive_of(run)
    if archive is not None:
        response["X-Log-Archived"] = archive.created_at.isoformat()  # read back from object storage
    return response


@login_required
@require_POST
def run_cancel(request, pk):
    """Cancel any kind of run (a build, a conversion, a host action, ...), then go back to the page the button was on
    (`next`), or to the run's page."""
    run = get_run_for_user(request.user, pk, action=lambda run: action_to_cancel(run.kind))
    if run.is_finished:
        messages.info(request, f"{run} had already ended ({run.status}).")
    elif not run.stoppable():
        messages.info(request, f"{run} has started its bootc command on the host; it runs to its end (a bootc change is "
                               "atomic), then you can act again.")
    else:
        services.run_request_cancel(run=run, user=request.user, request=request)
        messages.success(request, f"Cancelling {run}: its processes are stopped within seconds and the log so far is "
                                  "kept.")
    return redirect(_next_path(request) or run)


def _retry_action(run):
    retry = registry.run_retry_for(run.kind)
    return retry.action if retry is not None else Action.DEVELOP


@login_required
@require_POST
def run_retry(request, pk):
    """Start a run again as a new one, the way its app registered (`portal.registry.run_retry`: a build of the same
    revision, a conversion with the same configuration), and show the new one; the old one stays as it was."""
    run = get_run_for_user(request.user, pk, action=_retry_action)
    retry = registry.run_retry_for(run.kind)
    if retry is None:
        raise Http404(f"A {run.get_kind_display().lower()} is not started again this way.")
    old = run.subject or run
    try:
        new = retry.retry(run=run, user=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return redirect(_next_path(request) or run)
    messages.success(request, f"Queued {new}: a retry of {old}.")
    return redirect(new)


# --- The REST API's docs page ----------------------------------------------------------------------------------------


def api_docs(request):
    """Swagger UI on the API's own schema: public, like the schema (it holds no data, only the API's shape)."""
    return render(request, "portal/api_docs.html", {"schema_url": reverse("api:openapi-json")})


# --- Health ----------------------------------------------------------------------------------------------------------


def _may_see_health_details(request):
    """Staff, or a monitor presenting HEALTH_TOKEN as `Authorization: Bearer <token>` (compared in constant time)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    token = settings.HEALTH_TOKEN
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode("utf-8", "replace"), token.encode("utf-8"))


def _health_response(checks, *, details, workers=()):
    ok = all(check.ok for check in checks.values())
    if not ok:
        failing = "; ".join(f"{name}: {check.detail}" for name, check in checks.items() if not check.ok)
        log.warning("health: not ok (%s)", failing)
    body = {"ok": ok}
    if details:
        body["checks"] = {name: check.as_dict() for name, check in checks.items()}
        body["workers"] = [worker.as_dict() for worker in workers]
    return JsonResponse(body, status=200 if ok else 503)


@never_cache
def health(request):
    """The database, Redis, the broker and the workers' heartbeats: 200 when all are OK, else 503. Anonymous callers
    learn only ok or not ok; staff and HEALTH_TOKEN bearers get each check's detail and the live workers."""
    checks = health_checks.readiness()
    checks["workers"], live = health_checks.worker_state()
    return _health_response(checks, details=_may_see_health_details(request), workers=live)


@never_cache
def health_live(request):
    """Liveness: the process answers. Checks nothing else, so a database outage never restarts web processes."""
    return JsonResponse({"ok": True})


@never_cache
def health_ready(request):
    """Readiness: the database, Redis and the broker answer (workers are not required to serve pages)."""
    return _health_response(health_checks.readiness(), details=False)


@never_cache
def metrics(request):
    """Prometheus's scrape: django-prometheus's request and database metrics of this process and the portal's own
    (`portal.metrics`), for a bearer of METRICS_TOKEN or a client in METRICS_ALLOWED_NETWORKS; a 403 saying which
    otherwise."""
    ok, why = portal_metrics.allowed(request)
    if not ok:
        return HttpResponse(why + "\n", status=403, content_type="text/plain; charset=utf-8")
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


# --- Errors ----------------------------------------------------------------------------------------------------------


@login_required
def explain_log(request):
    """Paste a build, conversion or bootc log and read the explanation its run's page would give. Any signed-in user
    may: nothing is stored and nothing of anyone's runs is read."""
    form = ExplainLogForm(request.POST or None)
    explanation = parts = None
    if request.method == "POST" and form.is_valid():
        text = form.cleaned_data["log"]
        explanation = failures.explain(text, tool=form.cleaned_data["tool"], succeeded=form.succeeded)
        parts = failures.segments(text)
    return render(request, "portal/explain.html", {"form": form, "explanation": explanation, "segments": parts,
                                                   "section": "explain"}, status=400 if form.errors else 200)


def error_400(request, exception=None):
    """A request Django could not read: most often a form posted with more than DATA_UPLOAD_MAX_MEMORY_SIZE of text."""
    too_big = isinstance(exception, RequestDataTooBig)
    return render(request, "400.html", {"too_big": too_big,
                                        "limit_mb": settings.DATA_UPLOAD_MAX_MEMORY_SIZE / 1024 / 1024}, status=400)


def error_403(request, exception=None):
    reason = str(exception) if exception and str(exception) else "Your role does not allow this."
    return render(request, "403.html", {"reason": reason}, status=403)


def error_404(request, exception=None):
    return render(request, "404.html", status=404)


def error_500(request):
    return render(request, "500.html", status=500)


def csrf_failure(request, reason=""):
    """A POST without a valid CSRF token: refused, explained, and audited (it may be a forged request)."""
    user = request.user if getattr(request, "user", None) and request.user.is_authenticated else None
    services.audit(action="security.csrf_failure", summary=f"refused a {request.method} to {request.path[:200]}: {reason}",
                   actor=user, request=request, detail={"path": request.path[:500], "reason": reason})
    return render(request, "403_csrf.html", status=403)
