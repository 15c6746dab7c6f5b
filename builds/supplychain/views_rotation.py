"""A signing key's own page and its rotation: what it signed, which stages name it, the rotation's progress (a
fragment the page refreshes while the run works) and the run's live log; starting and resuming a rotation. Every
object through `.access`, every change through `.rotation`."""

import datetime

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from portal.access import can
from portal.forms import add_service_errors
from portal.models import Action, action_to_cancel
from portal.views import _viewer_context, error_text

from . import rotation as rotations
from .access import get_rotation_for_user, get_signing_key_for_user
from .forms import RotateForm
from .models import KeyRotation, Signature, StageSigningPolicy


@login_required
@require_GET
def key_detail(request, pk):
    key = get_signing_key_for_user(request.user, pk)
    context = _key_context(request, key)
    if request.htmx and request.htmx.target == "rotation-live":
        return render(request, "supplychain/_rotation.html", context)
    return render(request, "supplychain/key_detail.html", context)


def _key_context(request, key, *, rotate_form=None):
    is_admin = can(request.user, key.team, Action.ADMIN)
    current = (KeyRotation.objects.filter(old_key=key).select_related("old_key", "new_key", "run", "started_by")
               .first())
    incoming = KeyRotation.objects.filter(new_key=key).select_related("old_key", "new_key", "run").first()
    shown = current or incoming
    run = shown.run if shown is not None else None
    context = {
        "key": key, "team": key.team, "is_admin": is_admin, "rotation": current, "incoming": incoming,
        "shown": shown, "run": run,
        "can_cancel": run is not None and run.stoppable() and can(request.user, key.team, action_to_cancel(run.kind)),
        "signed": Signature.objects.valid().filter(key=key).count(),
        "stages_required": StageSigningPolicy.objects.filter(key=key).select_related("stage"),
        "stages_entry": StageSigningPolicy.objects.filter(entry_key=key).select_related("stage"),
        "can_rotate": is_admin and key.is_active and not KeyRotation.objects.open().filter(old_key=key).exists(),
        "rotate_form": rotate_form or RotateForm(key=key, initial={
            "old_until": (timezone.now() + datetime.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M")}),
        "verifying": rotations.verifying_keys(key) if key.is_active else [],
    }
    if run is not None:
        context.update(_viewer_context(run))
    return context


@login_required
@require_POST
def key_rotate(request, pk):
    key = get_signing_key_for_user(request.user, pk, action=Action.ADMIN)
    form = RotateForm(request.POST, key=key)
    if form.is_valid():
        old_until = form.cleaned_data["old_until"]
        try:
            rotations.key_rotation_start(old_key=key, new_key=form.cleaned_data["new_key"], old_until=old_until,
                                         user=request.user, request=request)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, f"Rotating {key} to {form.cleaned_data['new_key']}: every digest in use that "
                             f"{key} signed is re-signed first; {key} verifies until {old_until:%Y-%m-%d %H:%M} UTC.")
            return redirect("supplychain:key_detail", pk=key.pk)
    context = _key_context(request, key, rotate_form=form)
    if not context["can_rotate"]:  # the form is not on the page (a rotation is open): say why in a message
        messages.error(request, " ".join(form.non_field_errors()) or "This key cannot be rotated now.")
    return render(request, "supplychain/key_detail.html", context, status=400)


@login_required
@require_POST
def rotation_resume(request, pk):
    rotation = get_rotation_for_user(request.user, pk, action=Action.ADMIN)
    key = rotation.old_key
    try:
        rotations.key_rotation_resume(rotation=rotation, user=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, f"Resumed rotating {key}: digests already re-signed are skipped.")
    return redirect("supplychain:key_detail", pk=key.pk)
