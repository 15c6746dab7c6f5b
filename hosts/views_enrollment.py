"""Pages for hosts that report in: a team's enrollment tokens (made, shown once with the agent to install, revoked),
the hosts that wait for approval, and approving one. Team members read the page; team admins change things."""

from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from portal.access import can
from portal.models import Action

from . import agent_dist, reportin
from .access import get_host_for_user, get_team_keys_for_user
from .forms import EnrollmentTokenForm
from .models import EnrollmentToken, Host, HostMode


def _page(request, team, *, form=None, created=None, status=200):
    is_admin = can(request.user, team, Action.ADMIN)
    context = {
        "team": team, "is_admin": is_admin,
        "tokens": EnrollmentToken.objects.filter(team=team).select_related("stage", "created_by")[:100],
        "pending": Host.objects.filter(team=team, mode=HostMode.REPORT, approved_at__isnull=True)
        .select_related("enrolled_with").order_by("created_at")[:200],
        "reporting": Host.objects.filter(team=team, mode=HostMode.REPORT, approved_at__isnull=False).count(),
        "form": form or (EnrollmentTokenForm(team=team) if is_admin else None),
        "created": created,
    }
    return render(request, "hosts/enrollment.html", context, status=status)


@login_required
def enrollment(request, slug):
    """GET: the tokens and the pending hosts. POST (team admins): a new token, shown once with the agent to install."""
    team = get_team_keys_for_user(request.user, slug, action=Action.ADMIN if request.method == "POST" else Action.VIEW)
    if request.method != "POST":
        return _page(request, team)
    form = EnrollmentTokenForm(request.POST, team=team)
    if not form.is_valid():
        return _page(request, team, form=form, status=400)
    data = form.cleaned_data
    try:
        token, secret = reportin.enrollment_token_create(
            team=team, user=request.user, name=data["name"], stage=data["stage"], uses=data["uses"],
            expires_in=timedelta(hours=data["expires_in_hours"]), pre_approved=data["pre_approved"],
            labels=data["labels"], request=request)
    except ValidationError as exc:
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
        return _page(request, team, form=form, status=400)
    portal_url = settings.HOSTS_AGENT_URL or request.build_absolute_uri("/").rstrip("/")
    created = {"token": token, "secret": secret,
               "containerfile": agent_dist.containerfile_snippet(portal_url=portal_url, token=secret),
               "kickstart": agent_dist.kickstart_post(portal_url=portal_url, token=secret)}
    return _page(request, team, form=EnrollmentTokenForm(team=team), created=created)


@login_required
@require_POST
def enrollment_token_revoke(request, slug, pk):
    team = get_team_keys_for_user(request.user, slug, action=Action.ADMIN)
    token = get_object_or_404(EnrollmentToken, team=team, pk=pk)
    reportin.enrollment_token_revoke(token=token, user=request.user, request=request)
    messages.success(request, f"Enrollment token {token} is revoked: no host can enroll with it any more. Hosts "
                              "already enrolled keep their own credentials.")
    return redirect("hosts:enrollment", team.slug)


@login_required
@require_POST
def host_approve(request, pk):
    host = get_host_for_user(request.user, pk, action=Action.ADMIN)
    try:
        reportin.host_approve(host=host, user=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(host)
    messages.success(request, f"{host} is approved: its next report (within a minute) shows its state.")
    if request.POST.get("next") == "enrollment":
        return redirect("hosts:enrollment", host.team.slug)
    return redirect(host)
