"""A team's inventory and trust, for its admins: hosts added, edited, deleted and imported, host keys trusted, and the
team's SSH keys, jump hosts and pending host keys. Every view asks `hosts.access` / `portal.access` first."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from portal.access import can, teams_where
from portal.models import Action, Team

from . import services
from .access import get_host_for_user, get_team_keys_for_user
from .connect import HostError
from .forms import HostForm, ImportForm, JumpHostForm, KeyForm
from .models import Host, HostMode, HostState, JumpHost, TeamSSHKey

# --- Inventory and trust (team admins) -------------------------------------------------------------------------------


@login_required
def host_add(request):
    teams = teams_where(request.user, Action.ADMIN)
    if not teams.exists():
        raise PermissionDenied("Only team admins add hosts.")
    form = HostForm(request.POST or None, teams=teams)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            host = services.host_create(
                team=data["team"], name=data["name"], address=data["address"], port=data["port"],
                ssh_user=data["ssh_user"], labels=data["labels"], stage=data["stage"],
                tracked_image=data["tracked_image"], jump_host=data["jump_host"], host_key=data["host_key"],
                actor=request.user, request=request,
            )
        except ValidationError as exc:
            _errors_to_form(form, exc)
        else:
            if host.trusted:
                messages.success(request, f"Added {host}; its key is confirmed and the first poll is on its way.")
                return redirect(host)
            messages.success(request, f"Added {host}. Now compare its host key with the one on the machine.")
            return redirect("hosts:host_trust", host.pk)
    return render(request, "hosts/host_form.html", {"form": form, "title": "Add a host"},
                  status=400 if form.errors else 200)


def _errors_to_form(form, exc):
    for field, errors in getattr(exc, "message_dict", {"__all__": exc.messages}).items():
        form.add_error(field if field in form.fields else None, errors)


@login_required
def host_edit(request, pk):
    host = get_host_for_user(request.user, pk, action=Action.ADMIN)
    teams = Team.objects.filter(pk=host.team_id)
    initial = {"name": host.name, "address": host.address, "port": host.port, "ssh_user": host.ssh_user,
               "jump_host": host.jump_host, "stage": host.stage, "tracked_image": host.tracked_image,
               "labels": host.labels}
    form = HostForm(request.POST or None, teams=teams, host=host, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            services.host_update(host=host, actor=request.user, request=request, name=data["name"],
                                 address=data["address"], port=data["port"], ssh_user=data["ssh_user"],
                                 labels=data["labels"], stage=data["stage"], tracked_image=data["tracked_image"],
                                 jump_host=data["jump_host"])
        except ValidationError as exc:
            _errors_to_form(form, exc)
        else:
            messages.success(request, f"Saved {host}.")
            return redirect(host)
    return render(request, "hosts/host_form.html", {"form": form, "title": f"Edit {host}", "host": host,
                                                    "can_admin": True}, status=400 if form.errors else 200)


@login_required
@require_POST
def host_delete(request, pk):
    host = get_host_for_user(request.user, pk, action=Action.ADMIN)
    try:
        services.host_delete(host=host, actor=request.user, request=request)
    except HostError as exc:
        messages.error(request, str(exc))
        return redirect(host)
    messages.success(request, f"Removed {host} and its history.")
    return redirect("hosts:host_list")


@login_required
def host_trust(request, pk):
    """Compare and confirm the host key. GET fetches the offered key when there is none (never trusting it)."""
    host = get_host_for_user(request.user, pk, action=Action.ADMIN)
    form = KeyForm(request.POST or None)
    fetch_error = None
    if request.method == "POST":
        if request.POST.get("fetch"):
            try:
                services.host_fetch_key(host=host, actor=request.user)
                messages.info(request, "Fetched the key the host presents now. Compare its fingerprint before "
                                       "confirming.")
            except HostError as exc:
                messages.error(request, f"Could not fetch the key: {exc}")
            return redirect("hosts:host_trust", host.pk)
        if form.is_valid():
            services.host_confirm_key(host=host, key=form.cleaned_data["key"], actor=request.user, request=request)
            messages.success(request, f"{host}'s host key is confirmed. The portal polls it now.")
            return redirect(host)
    elif not host.offered_host_key and not host.trusted:
        try:
            services.host_fetch_key(host=host, actor=request.user)
        except HostError as exc:
            fetch_error = str(exc)
    team_key = TeamSSHKey.objects.filter(team=host.team).first()
    return render(request, "hosts/host_trust.html", {"host": host, "form": form, "fetch_error": fetch_error,
                                                     "team_key": team_key}, status=400 if form.errors else 200)


@login_required
def host_import(request):
    teams = teams_where(request.user, Action.ADMIN)
    if not teams.exists():
        raise PermissionDenied("Only team admins import hosts.")
    form = ImportForm(request.POST or None, request.FILES or None, teams=teams)
    report = None
    if request.method == "POST" and form.is_valid():
        report, created = services.hosts_import_csv(team=form.cleaned_data["team"], text=form.cleaned_data["csv"],
                                                    actor=request.user, request=request)
        messages.success(request, f"Imported {len(created)} host{'s' if len(created) != 1 else ''}; "
                                  f"{sum(1 for r in report if not r.ok)} row(s) refused.")
    return render(request, "hosts/host_import.html", {"form": form, "report": report,
                                                      "columns": services.CSV_COLUMNS},
                  status=400 if form.errors else 200)


# --- Team keys, jump hosts, pending keys -----------------------------------------------------------------------------


@login_required
def team_keys(request, slug):
    team = get_team_keys_for_user(request.user, slug)
    is_admin = can(request.user, team, Action.ADMIN)
    key = TeamSSHKey.objects.filter(team=team).first()
    pending = Host.objects.filter(team=team, host_key="", mode=HostMode.SSH).order_by("name")[:200] if is_admin else []
    changed = Host.objects.filter(team=team, state=HostState.HOST_KEY_CHANGED).order_by("name")[:200]
    return render(request, "hosts/team_keys.html", {
        "team": team, "key": key, "is_admin": is_admin, "pending": pending, "changed": changed,
        "jump_hosts": JumpHost.objects.filter(team=team), "jump_form": JumpHostForm() if is_admin else None,
    })


@login_required
@require_POST
def team_key_create(request, slug):
    team = get_team_keys_for_user(request.user, slug, action=Action.ADMIN)
    key = services.team_key_ensure(team=team, actor=request.user, request=request)
    messages.success(request, f"{team}'s SSH key is {key.fingerprint}. Put the public key on its hosts.")
    return redirect("hosts:team_keys", team.slug)


@login_required
@require_POST
def jump_host_add(request, slug):
    team = get_team_keys_for_user(request.user, slug, action=Action.ADMIN)
    form = JumpHostForm(request.POST)
    if form.is_valid():
        try:
            services.jump_host_create(team=team, actor=request.user, request=request, **form.cleaned_data)
            messages.success(request, f"Added jump host {form.cleaned_data['name']}.")
        except ValidationError as exc:
            messages.error(request, " ".join(services._messages(exc)))
    else:
        messages.error(request, "; ".join(f"{f}: {' '.join(e)}" for f, e in form.errors.items()))
    return redirect("hosts:team_keys", team.slug)


@login_required
@require_POST
def pending_keys_confirm(request, slug):
    """Confirm the offered keys of the selected hosts (after comparing fingerprints in the list)."""
    team = get_team_keys_for_user(request.user, slug, action=Action.ADMIN)
    ids = [int(i) for i in request.POST.getlist("host") if i.isdigit()]
    confirmed = 0
    for host in Host.objects.filter(team=team, pk__in=ids).exclude(offered_host_key=""):
        expected = request.POST.get(f"fp-{host.pk}", "")
        if expected and expected != host.offered_fingerprint:
            messages.warning(request, f"{host} now offers another key than the one you saw; it was not confirmed.")
            continue
        services.host_confirm_key(host=host, key=host.offered_host_key, actor=request.user, request=request)
        confirmed += 1
    if request.POST.get("fetch"):
        services._enqueue_key_fetch(list(Host.objects.filter(team=team, host_key="", mode=HostMode.SSH)
                                         .values_list("pk", flat=True)))
        messages.info(request, "Fetching the keys of hosts that have none yet; reload in a moment.")
    elif confirmed:
        messages.success(request, f"Confirmed {confirmed} host key{'s' if confirmed != 1 else ''}.")
    return redirect("hosts:team_keys", team.slug)
