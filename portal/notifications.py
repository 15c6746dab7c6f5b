"""Notifications: email (Django's mail, the console backend in development) and signed outbound webhooks.

The core knows no event: each feature registers its kinds of event (`portal.registry.notification_event`) and composes
what it tells (the event's data, who is emailed, the email's text); `portal.events.emit` records the event and calls
`send(...)`, which delivers it. Called inside a transaction,
it creates the webhook delivery rows there and enqueues the email and the deliveries after commit, so nothing is sent
for a change that rolled back.

Webhook deliveries are signed (see docs/promotions.md for how a receiver verifies them):

    X-Portal-Timestamp: <unix seconds>
    X-Portal-Signature-256: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

and retried with exponential backoff (WEBHOOK_RETRY_BASE_SECONDS x 4^(attempt-1), at most WEBHOOK_MAX_ATTEMPTS tries)
by the `portal.tasks.webhook_deliver` task. A delivery keeps its last status code, error and timing for the delivery
log, never the response body: the receiver's answer is not the team admin's to read (a URL pointed at an internal
service would otherwise show that service's replies).

Every URL goes through the egress policy (`portal.egress`): when it is saved (a form error), and again at each attempt,
which connects to the address it checked and follows no redirect.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from kombu.exceptions import OperationalError

from . import egress, registry
from .access import check_team_action
from .models import IS_TEAM_TOKEN, ROLE_ACTIONS, Action, DeliveryStatus, NotificationWebhook, Team, User, WebhookDelivery
from .services import audit
from .text import storable

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Portal-Signature-256"
TIMESTAMP_HEADER = "X-Portal-Timestamp"
EMAIL_PREFIX = "[Image Mode Portal]"


# --- Signing ---------------------------------------------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: str, timestamp: str, body: bytes, signature: str, *, tolerance=300, now=None) -> bool:
    """What a receiver does (the documented method): recompute, compare in constant time, refuse old timestamps."""
    try:
        age = abs((now or time.time()) - int(timestamp))
    except (TypeError, ValueError):
        return False
    return age <= tolerance and hmac.compare_digest(sign(secret, timestamp, body), signature or "")


# --- The entry point -------------------------------------------------------------------------------------------------


def site_url(path: str) -> str:
    """An absolute link to `path` on the portal, for payloads and emails."""
    return settings.SITE_URL.rstrip("/") + path


def send(*, event: str, team: Team | None, payload: dict, recipients: Iterable[User] = (), subject: str = "",
         body: str = "") -> list[WebhookDelivery]:
    """Tell `recipients` by email (`subject`, `body`) and the webhooks subscribed to `event` (`payload`, an event's
    envelope from `portal.events.emit`, with the delivery's id added), after the transaction commits. The webhooks
    are the team's, or every team's for a portal-wide event (team=None)."""
    if registry.event_type(event) is None:
        raise ValueError(f"{event!r} is no registered kind of notification event")
    addresses = sorted({user.email for user in recipients if user.email})
    if addresses and subject:
        transaction.on_commit(lambda: _enqueue_email(f"{EMAIL_PREFIX} {subject}", body, addresses))
    hooks = NotificationWebhook.objects.filter(active=True)
    if team is not None:
        hooks = hooks.filter(team=team)
    deliveries = []
    for hook in hooks:
        if event not in hook.events:
            continue
        delivery_id = str(uuid.uuid4())
        deliveries.append(WebhookDelivery.objects.create(
            webhook=hook, event=event, delivery_id=delivery_id, payload={**payload, "delivery": delivery_id}))
    for delivery in deliveries:
        transaction.on_commit(lambda pk=delivery.pk: _enqueue_delivery(pk))
    return deliveries


def members_with(team: Team, action: str):
    """The active members of `team` whose role allows `action` (e.g. who is emailed about a failed build)."""
    roles = [role for role, actions in ROLE_ACTIONS.items() if action in actions]
    return (User.objects.filter(memberships__team=team, memberships__role__in=roles, is_active=True)
            .exclude(IS_TEAM_TOKEN).distinct())


def _enqueue_email(subject, body, recipients):
    """Best effort: a broker that does not answer loses the email (logged), never the change that caused it."""
    from .tasks import notification_email  # a cycle: portal.tasks calls this module's email_send

    try:
        notification_email.delay(subject, body, recipients)
    except OperationalError as exc:
        log.error("could not queue the email %r to %s: %s", subject, ", ".join(recipients), exc)


def _enqueue_delivery(pk):
    """Best effort: a delivery that could not be queued is sent by beat once it is overdue."""
    from .tasks import webhook_deliver  # a cycle: portal.tasks calls this module's webhook_attempt

    try:
        webhook_deliver.delay(pk)
    except OperationalError as exc:
        log.warning("could not queue webhook delivery %s (beat sends it when overdue): %s", pk, exc)


def email_send(*, subject: str, body: str, recipients: list[str]) -> int:
    """Send one notification email (the task calls this); one message per recipient, so nobody sees the others."""
    sent = 0
    for address in recipients:
        sent += send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [address], fail_silently=False)
    return sent


# --- Webhooks --------------------------------------------------------------------------------------------------------


def webhook_create(*, team: Team, user: User, name: str, url: str, events: list[str], request=None):
    """A new outbound webhook; returns (webhook, secret). The secret is shown once."""
    check_team_action(user, team, Action.ADMIN)
    secret = secrets.token_urlsafe(32)
    hook = NotificationWebhook(team=team, name=(name or "").strip(), url=(url or "").strip(), secret=secret,
                               events=list(events), created_by=user)
    _check_url(hook.url)
    hook.full_clean()
    with transaction.atomic():
        hook.save()
        audit(action="notification_webhook.create", summary=f"added webhook {hook.name} ({hook.url}) to {team}",
              actor=user, team=team, obj=hook, request=request, detail={"url": hook.url, "events": hook.events})
    return hook, secret


def webhook_update(*, hook: NotificationWebhook, user: User, name: str, url: str, events: list[str], active: bool,
                   request=None) -> NotificationWebhook:
    check_team_action(user, hook.team, Action.ADMIN)
    hook.name, hook.url, hook.events, hook.active = (name or "").strip(), (url or "").strip(), list(events), active
    _check_url(hook.url)
    hook.full_clean()
    with transaction.atomic():
        hook.save()
        audit(action="notification_webhook.update", summary=f"changed webhook {hook.name} of {hook.team}",
              actor=user, team=hook.team, obj=hook, request=request,
              detail={"url": hook.url, "events": hook.events, "active": active})
    return hook


def webhook_delete(*, hook: NotificationWebhook, user: User, request=None):
    check_team_action(user, hook.team, Action.ADMIN)
    with transaction.atomic():
        audit(action="notification_webhook.delete", summary=f"deleted webhook {hook.name} ({hook.url}) of {hook.team}",
              actor=user, team=hook.team, obj=hook, request=request)
        hook.delete()


def webhook_redeliver(*, delivery: WebhookDelivery, user: User, request=None) -> WebhookDelivery:
    """Send a delivery's payload again, as a new delivery (new id, new signature)."""
    hook = delivery.webhook
    check_team_action(user, hook.team, Action.ADMIN)
    delivery_id = str(uuid.uuid4())
    with transaction.atomic():
        again = WebhookDelivery.objects.create(webhook=hook, event=delivery.event, delivery_id=delivery_id,
                                               payload={**delivery.payload, "delivery": delivery_id})
        audit(action="notification_webhook.redeliver", summary=f"redelivered {delivery.event} to webhook {hook.name}",
              actor=user, team=hook.team, obj=hook, request=request, detail={"of": delivery.delivery_id})
        transaction.on_commit(lambda: _enqueue_delivery(again.pk))
    return again


def webhook_test(*, hook: NotificationWebhook, user: User, request=None) -> WebhookDelivery:
    """A `ping` delivery, to check the receiver and its signature check."""
    check_team_action(user, hook.team, Action.ADMIN)
    delivery_id = str(uuid.uuid4())
    with transaction.atomic():
        delivery = WebhookDelivery.objects.create(
            webhook=hook, event="ping", delivery_id=delivery_id,
            payload={"id": delivery_id, "type": "ping", "version": 1, "delivery": delivery_id,
                     "time": timezone.now().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                     "team": {"slug": hook.team.slug, "name": hook.team.name}, "actor": user.username,
                     "subject": {"kind": "webhook", "id": hook.pk, "name": hook.name,
                                 "url": site_url(hook.get_absolute_url()), "api_url": None},
                     "data": {}})
        transaction.on_commit(lambda: _enqueue_delivery(delivery.pk))
    return delivery


def _check_url(url):
    """The URL's form, then the egress policy (a name that does not resolve yet is checked again at delivery)."""
    if not url.lower().startswith(("https://", "http://")):
        raise ValidationError({"url": "The webhook URL must start with https:// (or http:// for a receiver on a trusted "
                                      "network)."})
    if "@" in url.split("://", 1)[1].split("/", 1)[0]:
        raise ValidationError({"url": "The webhook URL must not carry a user name or password: the receiver checks "
                                      "the signature made with the webhook's secret instead."})
    try:
        _, host, port = egress.split_url(url)
        egress.check(host, port, what="The webhook URL")
    except egress.EgressRefused as exc:
        raise ValidationError({"url": str(exc)}) from None


def retry_delay(attempts: int) -> float:
    """Seconds before attempt `attempts + 1`: base x 4^(attempts-1), at most an hour."""
    return min(settings.WEBHOOK_RETRY_BASE_SECONDS * 4 ** max(attempts - 1, 0), 3600)


def webhook_attempt(*, delivery_id: int) -> float | None:
    """One attempt of a delivery. Returns the seconds to wait before the next attempt, or None when it is done
    (delivered, failed for good, or not found).

    The HTTP request is made outside any transaction (a slow receiver must not hold database locks). A redelivered task
    may therefore send a delivery twice; receivers deduplicate by X-Portal-Delivery. A redirect is an answer (3xx),
    never followed: the signed body goes only where it was configured. A URL the egress policy refuses fails the
    delivery at once, without a retry.
    """
    delivery = WebhookDelivery.objects.select_related("webhook").filter(pk=delivery_id).first()
    if delivery is None or delivery.status in (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED):
        return None
    hook = delivery.webhook
    body = json.dumps(delivery.payload, sort_keys=True, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "ImageModePortal-Webhook/1",
        "X-Portal-Event": delivery.event,
        "X-Portal-Delivery": delivery.delivery_id,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(hook.secret, timestamp, body),
    }
    started = time.monotonic()
    code, error, refused = None, "", False
    try:
        answer = egress.post(hook.url, body=body, headers=headers, timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
                             what="The webhook URL")
        code = answer.status
        if code >= 300:
            error = f"HTTP {code} {answer.reason}"
    except egress.EgressRefused as exc:
        error, refused = str(exc), True
    except (OSError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    now = timezone.now()
    attempts = delivery.attempts + 1
    error = storable(error)  # the receiver's reason phrase may hold a NUL
    changes = {"attempts": attempts, "response_code": code, "error": error[:500],
               "duration_ms": int((time.monotonic() - started) * 1000), "last_attempt_at": now,
               "next_attempt_at": None}
    wait = None
    if code is not None and 200 <= code < 300:
        changes.update(status=DeliveryStatus.DELIVERED, delivered_at=now, error="")
    elif refused:
        changes.update(status=DeliveryStatus.FAILED)
    elif (code is not None and 400 <= code < 500 and code not in (408, 425, 429)) \
            or attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
        gave_up = f" (gave up after {attempts} attempt{'s' if attempts != 1 else ''})"
        changes.update(status=DeliveryStatus.FAILED, error=((error or f"HTTP {code}") + gave_up)[:500])
    else:
        wait = retry_delay(attempts)
        changes.update(status=DeliveryStatus.RETRYING, next_attempt_at=now + timedelta(seconds=wait))
    WebhookDelivery.objects.filter(pk=delivery.pk).exclude(status=DeliveryStatus.DELIVERED).update(**changes)
    return wait


def webhook_deliveries_due(*, now=None) -> list[int]:
    """Beat: enqueue deliveries whose attempt is overdue by more than two minutes: a retry held by a worker that was
    restarted (Redis redelivers such a task only after the visibility timeout, hours later), or a delivery whose task
    was never enqueued. Each is claimed for a few minutes so the next sweep does not enqueue it again at once."""
    now = now or timezone.now()
    overdue = now - timedelta(minutes=2)
    due = WebhookDelivery.objects.filter(
        Q(status=DeliveryStatus.RETRYING, next_attempt_at__lt=overdue)
        | (Q(status=DeliveryStatus.PENDING, created_at__lt=overdue)
           & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=overdue))))
    ids = list(due.order_by("pk").values_list("pk", flat=True)[:500])
    WebhookDelivery.objects.filter(pk__in=ids).update(next_attempt_at=now + timedelta(minutes=3))
    for pk in ids:
        _enqueue_delivery(pk)
    return ids
