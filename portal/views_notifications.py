"""A team's outbound webhooks (portal/notifications.py): add, change, test and delete them, and read and redeliver
their deliveries. Team admins only: a webhook holds a secret."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from . import notifications
from .access import get_notification_webhook_for_user, get_team_for_user, get_webhook_delivery_for_user
from .forms import NotificationWebhookForm, add_service_errors
from .models import Action, NotificationWebhook


@login_required
def notification_webhooks(request, slug):
    team = get_team_for_user(request.user, slug, action=Action.ADMIN)
    form = NotificationWebhookForm(request.POST or None)
    new_secret = new_hook = None
    if request.method == "POST" and form.is_valid():
        try:
            new_hook, new_secret = notifications.webhook_create(
                team=team, user=request.user, name=form.cleaned_data["name"], url=form.cleaned_data["url"],
                events=form.cleaned_data["events"], request=request)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            form = NotificationWebhookForm()
    hooks = NotificationWebhook.objects.filter(team=team).annotate(
        delivered=Count("deliveries", filter=Q(deliveries__status="delivered")),
        failing=Count("deliveries", filter=Q(deliveries__status__in=["failed", "retrying"])))
    return render(request, "portal/webhooks.html", {
        "team": team, "hooks": hooks, "form": form, "new_secret": new_secret, "new_hook": new_hook,
    }, status=400 if form.errors else 200)


@login_required
def notification_webhook_detail(request, pk):
    hook = get_notification_webhook_for_user(request.user, pk)
    form = NotificationWebhookForm(request.POST or None, instance=hook)
    if request.method == "POST" and form.is_valid():
        try:
            notifications.webhook_update(hook=hook, user=request.user, name=form.cleaned_data["name"],
                                         url=form.cleaned_data["url"], events=form.cleaned_data["events"],
                                         active=form.cleaned_data["active"], request=request)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, f"Saved webhook {hook.name}.")
            return redirect(hook)
    deliveries = hook.deliveries.all()
    status = request.GET.get("status", "")
    if status:
        deliveries = deliveries.filter(status=status)
    page = Paginator(deliveries.order_by("-created_at", "-id"), 25).get_page(request.GET.get("page"))
    return render(request, "portal/webhook_detail.html", {
        "hook": hook, "form": form, "page": page, "status": status,
    }, status=400 if form.errors else 200)


@login_required
@require_POST
def notification_webhook_delete(request, pk):
    hook = get_notification_webhook_for_user(request.user, pk)
    team = hook.team
    notifications.webhook_delete(hook=hook, user=request.user, request=request)
    messages.success(request, f"Deleted webhook {hook.name}; nothing is sent to {hook.url} any more.")
    return redirect("portal:notification_webhooks", slug=team.slug)


@login_required
@require_POST
def notification_webhook_test(request, pk):
    hook = get_notification_webhook_for_user(request.user, pk)
    notifications.webhook_test(hook=hook, user=request.user, request=request)
    messages.success(request, "Sent a ping; its outcome appears in the delivery log below in a few seconds.")
    return redirect(hook)


@login_required
@require_POST
def webhook_delivery_redeliver(request, pk):
    delivery = get_webhook_delivery_for_user(request.user, pk)
    notifications.webhook_redeliver(delivery=delivery, user=request.user, request=request)
    messages.success(request, f"Sending {delivery.event} again, as a new delivery.")
    return redirect(delivery.webhook)
