"""The audit trail: append-only events, each chained to the one before by an HMAC (`portal.services.audit`)."""

import hashlib
import hmac
import json

from django.conf import settings
from django.db import models
from django.utils import timezone

from .teams import Membership, Team


class AuditQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("The audit trail is append-only.")

    def delete(self):
        raise TypeError("The audit trail is append-only.")

    def visible_to(self, user):
        """Superusers see everything; others see their teams' events and their own."""
        if user.is_superuser:
            return self
        my_teams = Membership.objects.filter(user=user).values("team")
        return self.filter(models.Q(team__in=my_teams) | models.Q(actor=user))


class AuditEvent(models.Model):
    """One thing that happened, append-only and hash-chained.

    `seq` runs 1, 2, 3... with no gaps, and each event's `hash` is an HMAC (keyed with AUDIT_HMAC_KEY, which is not in
    the database) over its own fields and the previous event's hash, so editing, deleting or reordering any event breaks
    the chain at that point (`manage.py audit_verify` finds it). Deleting the newest events leaves a shorter chain that
    is still whole: checkpoints of the head kept outside the database find that (`portal.audit_checkpoints`).
    Written only by `portal.services.audit()`.
    """

    seq = models.PositiveBigIntegerField(unique=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # The references are kept as they were, even after the user or team is deleted (no cascade may touch the chain).
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False,
        related_name="audit_events",
    )
    actor_name = models.CharField(max_length=150, blank=True, help_text="Kept when the user is deleted.")
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64, blank=True, db_index=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="audit_events"
    )
    team_name = models.CharField(max_length=100, blank=True)
    summary = models.CharField(max_length=500)
    detail = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditQuerySet.as_manager()

    GENESIS_HASH = "0" * 64

    class Meta:
        ordering = ["-seq"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self):
        return f"#{self.seq} {self.action}: {self.summary}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise TypeError("The audit trail is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("The audit trail is append-only.")

    def canonical(self):
        """The exact bytes the hash covers: every recorded field, in a fixed order."""
        fields = {
            "seq": self.seq,
            "created_at": self.created_at.isoformat(timespec="microseconds"),
            "actor_id": self.actor_id,
            "actor_name": self.actor_name,
            "action": self.action,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "object_repr": self.object_repr,
            "team_id": self.team_id,
            "team_name": self.team_name,
            "summary": self.summary,
            "detail": self.detail,
            "ip_address": self.ip_address,
            "prev_hash": self.prev_hash,
        }
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()

    def compute_hash(self):
        """HMAC-SHA256 of `canonical()` under AUDIT_HMAC_KEY: without the key, nobody can compute a valid hash, so an
        edited event cannot be hidden by recomputing the chain after it."""
        return hmac.new(settings.AUDIT_HMAC_KEY.encode(), self.canonical(), hashlib.sha256).hexdigest()
