"""Events and where they go: the stored events envelope (`portal.events`), the teams' outbound webhooks and their
deliveries (`portal.notifications`)."""


from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils import timezone

from .. import registry
from ..crypto import EncryptedTextField
from .teams import Membership, Team


def validate_webhook_events(value):
    kinds = {kind for kind, _ in registry.notification_events()}
    if not isinstance(value, list) or not value or any(v not in kinds for v in value):
        raise ValidationError("Pick at least one event.")


class NotificationWebhook(models.Model):
    """An outbound webhook of a team: the portal POSTs the events it subscribed to as JSON, signed with HMAC-SHA256 of
    the shared secret. The kinds of event are the features' (portal.registry.notification_event)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="notification_webhooks")
    name = models.CharField(max_length=100)
    url = models.URLField(max_length=500)
    secret = EncryptedTextField(help_text="Signs every delivery (stored encrypted).")
    events = models.JSONField(default=list, validators=[validate_webhook_events])
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["team", "name"]

    def __str__(self):
        return f"{self.team.slug}: {self.name}"

    def get_absolute_url(self):
        return reverse("portal:notification_webhook_detail", args=[self.pk])


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RETRYING = "retrying", "Retrying"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """One event sent (or being sent) to one webhook, with the outcome of its latest attempt: status code, error and
    timing. The receiver's response body is never kept (see portal.notifications)."""

    webhook = models.ForeignKey(NotificationWebhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=40)
    delivery_id = models.CharField(max_length=36, unique=True, help_text="Sent as X-Portal-Delivery.")
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING,
                              db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["webhook", "-created_at"])]
        verbose_name_plural = "webhook deliveries"

    def __str__(self):
        return f"{self.event} to {self.webhook} ({self.status})"


class EventQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Events of the teams the user is a member of (any role); superusers see all, team-less ones included."""
        if not user.is_authenticated or not user.is_active:
            return self.none()
        if user.is_superuser:
            return self
        return self.filter(team__in=Membership.objects.filter(user=user).values("team"))


class Event(models.Model):
    """Something users care about happened (a build failed, a promotion was applied): the envelope exactly as webhooks
    receive it, kept for the API's event list (`portal.events.event_list`) until the retention pass removes it.
    `sequence` orders events and is the list's cursor; `uuid` is the envelope's id."""

    sequence = models.BigAutoField(primary_key=True)
    uuid = models.UUIDField(unique=True)
    type = models.CharField(max_length=60, db_index=True)
    version = models.PositiveSmallIntegerField()
    time = models.DateTimeField(db_index=True)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    subject_kind = models.CharField(max_length=40, blank=True)
    subject_id = models.CharField(max_length=64, blank=True)
    envelope = models.JSONField()

    objects = EventQuerySet.as_manager()

    class Meta:
        ordering = ["sequence"]
        indexes = [models.Index(fields=["team", "sequence"])]

    def __str__(self):
        return f"{self.type} {self.uuid}"
