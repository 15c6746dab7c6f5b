"""Pages for saved disk image configurations (presets): list, create and edit (in the parts of
builds/diskimages/forms_presets.py), import, export and delete. Every preset comes through
`builds.diskimages.access`; every change through `builds.diskimages.services`."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_POST

from builds.views import search_query
from portal.access import can, teams_where
from portal.models import Action
from portal.views import current_team

from . import diskconfig, services_presets
from .access import get_preset_for_user
from .forms import add_service_errors
from .forms_presets import FilesystemFormSet, PresetForm, PresetImportForm, UserFormSet, preset_config_from, preset_initial
from .models import DiskImage, DiskImagePreset
from .views import PAGE_SIZE, scoped


@login_required
def preset_list(request):
    presets = scoped(request, DiskImagePreset.objects.visible_to(request.user)).select_related("team", "created_by")
    query = search_query(request)
    if query:
        presets = presets.filter(Q(name__icontains=query) | Q(description__icontains=query))
    page = Paginator(presets.order_by("team__name", "name"), PAGE_SIZE).get_page(request.GET.get("page"))
    rows = [(p, diskconfig.summary(p.config), diskconfig.accepted_types(p.config),
             can(request.user, p.team, Action.DEVELOP)) for p in page]
    return render(request, "diskimages/preset_list.html", {
        "page": page, "rows": rows, "query": query,
        "can_create": teams_where(request.user, Action.DEVELOP).exists(),
    })


def _develop_teams(request):
    teams = teams_where(request.user, Action.DEVELOP)
    team = current_team(request)
    if team is not None and teams.filter(pk=team.pk).exists():
        return [team]
    return list(teams.order_by("name"))


def _preset_forms(request, *, config=None, teams=None, preset=None):
    data = request.POST if request.method == "POST" else None
    initial, users, filesystems = preset_initial(config or {})
    if preset is not None:
        initial.update(name=preset.name, description=preset.description)
    form = PresetForm(data, initial=initial, teams=teams)
    user_set = UserFormSet(data, initial=users, prefix="users")
    fs_set = FilesystemFormSet(data, initial=filesystems, prefix="fs")
    return form, user_set, fs_set


@login_required
def preset_create(request):
    teams = _develop_teams(request)
    if not teams:
        raise PermissionDenied("You need the developer role in a team to save disk image configurations.")
    form, user_set, fs_set = _preset_forms(request, teams=teams)
    if request.method == "POST":
        result = _save_preset(request, form, user_set, fs_set, team=None, teams=teams)
        if result is not None:
            return result
    return render(request, "diskimages/preset_form.html", {"form": form, "users": user_set, "filesystems": fs_set})


def _save_preset(request, form, user_set, fs_set, *, team, teams, preset=None):
    valid = form.is_valid() & user_set.is_valid() & fs_set.is_valid()
    if not valid:
        return None
    merged = preset_config_from(form, user_set, fs_set)
    if merged is None:
        return None
    config, _ = merged
    team = team or form.cleaned_data.get("team") or teams[0]
    try:
        saved = services_presets.preset_save(team=team, user=request.user, name=form.cleaned_data["name"], config=config,
                                       description=form.cleaned_data.get("description", ""), preset=preset,
                                       source_format=preset.source_format if preset else "toml", request=request)
    except ValidationError as exc:
        add_service_errors(form, exc, config_field="other")
        return None
    messages.success(request, f"Saved the configuration {saved.name!r}.")
    return redirect(saved)


@login_required
def preset_edit(request, pk):
    preset = get_preset_for_user(request.user, pk)
    may_edit = can(request.user, preset.team, Action.DEVELOP)
    if request.method == "POST" and not may_edit:
        raise PermissionDenied(f"Your role in {preset.team} does not allow you to change configurations.")
    form, user_set, fs_set = _preset_forms(request, config=preset.config, preset=preset)
    if request.method == "POST":
        result = _save_preset(request, form, user_set, fs_set, team=preset.team, teams=[preset.team], preset=preset)
        if result is not None:
            return result
    return render(request, "diskimages/preset_form.html", {
        "form": form, "users": user_set, "filesystems": fs_set, "preset": preset, "may_edit": may_edit,
        "rendered": diskconfig.render(preset.config, preset.source_format),
        "accepted": diskconfig.accepted_types(preset.config), "summary": diskconfig.summary(preset.config),
        "used": DiskImage.objects.filter(preset=preset).count(),
    })


@login_required
def preset_import(request):
    teams = _develop_teams(request)
    if not teams:
        raise PermissionDenied("You need the developer role in a team to import disk image configurations.")
    form = PresetImportForm(request.POST or None, request.FILES or None, teams=teams)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            preset = services_presets.preset_import(team=data.get("team") or teams[0], user=request.user, name=data["name"],
                                              text=data["text"], filename=data["filename"], fmt=data.get("format", ""),
                                              description=data.get("description", ""), request=request)
        except ValidationError as exc:
            for key, errors in exc.message_dict.items():
                for error in errors:
                    form.add_error("name" if key == "name" else ("file" if data["filename"] else "text"), error)
        else:
            messages.success(request, f"Imported {preset.name!r}"
                                      f"{f' with {len(preset.warnings)} note(s)' if preset.warnings else ''}.")
            return redirect(preset)
    return render(request, "diskimages/preset_import.html", {"form": form})


@login_required
def preset_export(request, pk):
    preset = get_preset_for_user(request.user, pk)
    fmt = request.GET.get("format") or preset.source_format
    fmt = fmt if fmt in ("toml", "json") else "toml"
    response = HttpResponse(diskconfig.render(preset.config, fmt),
                            content_type="application/json" if fmt == "json" else "application/toml; charset=utf-8")
    response["Content-Disposition"] = content_disposition_header(True, f"config.{fmt}")
    return response


@login_required
@require_POST
def preset_delete(request, pk):
    preset = get_preset_for_user(request.user, pk, action=Action.DEVELOP)
    services_presets.preset_delete(preset=preset, user=request.user, request=request)
    messages.success(request, f"Deleted the configuration {preset.name!r}; conversions that used it keep their copy.")
    return redirect("diskimages:preset_list")
