"""The portal's core: users, teams and roles, the audit trail, and the runs-and-logs machinery every long operation shares."""

import hashlib
import hmac
import json
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from . import formatting, registry
from .crypto import EncryptedTextField
from .logtext import LEVELS


class User(AbstractUser):
    """A person. `is_helpdesk` lets them read every team's host state and history, with no secrets and no actions."""

    is_helpdesk = models.BooleanField(
        "help-desk", default=False, help_text="Reads host state and history of every team; sees no secrets, acts on nothing."
    )
    oidc_subject = models.CharField(
        "identity provider subject", max_length=255, null=True, blank=True, unique=True,
        help_text="The `sub` claim of the identity provider's account this user signs in with (portal.sso); empty for "
                  "local accounts, which the provider can never sign in as.")

    def __str__(self):
        return self.get_full_name() or self.username


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    DEVELOPER = "developer", "Developer"
    APPROVER = "approver", "Approver"
    OPERATOR = "operator", "Operator"
    ADMIN = "admin", "Admin"


class Action(models.TextChoices):
    """What a role may do in a team. Access helpers ask for one of these."""

    VIEW = "view", "see the team's images, builds, promotions and hosts"
    DEVELOP = "develop", "edit Containerfiles, run builds and conversions, request promotions"
    APPROVE = "approve", "sign off promotions"
    OPERATE = "operate", "act on hosts"
    ADMIN = "admin", "manage members, stages, hosts and credentials"


ROLE_ACTIONS = {
    Role.VIEWER: {Action.VIEW},
    Role.DEVELOPER: {Action.VIEW, Action.DEVELOP},
    Role.APPROVER: {Action.VIEW, Action.DEVELOP, Action.APPROVE},
    Role.OPERATOR: {Action.VIEW, Action.OPERATE},
    Role.ADMIN: {Action.VIEW, Action.DEVELOP, Action.APPROVE, Action.OPERATE, Action.ADMIN},
}


class TeamScopedQuerySet(models.QuerySet):
    """Rows that belong to a team, reached from each row by `team_path`: a user sees those of the teams they are a
    member of (superusers see all, anonymous users none). Each feature's QuerySet sets its own path."""

    team_path = "team"

    def visible_to(self, user):
        if not user.is_authenticated:
            return self.none()
        if user.is_superuser:
            return self
        return self.filter(**{f"{self.team_path}__in": Membership.objects.filter(user=user).values("team")})


class TeamQuerySet(models.QuerySet):
    def visible_to(self, user):
        if not user.is_authenticated:
            return self.none()
        if user.is_superuser:
            return self
        return self.filter(memberships__user=user)


class Team(models.Model):
    """A group of people owning image definitions, stages and hosts."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    require_two_factor = models.BooleanField(
        "require a second factor", default=False,
        help_text="Approvers and admins must sign in with a second factor to approve or administer in this team.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TeamQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("portal:team_detail", args=[self.slug])

    @staticmethod
    def slug_for(name):
        return slugify(name)[:100]


class Membership(models.Model):
    """One user's role in one team. A user may belong to several teams, with one role in each."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.VIEWER)
    from_identity_provider = models.BooleanField(
        default=False, help_text="Given by the identity provider's groups at sign-in (portal.sso): the next sign-in "
                                 "changes or removes it to follow the groups.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="one_membership_per_user_and_team")]
        ordering = ["team__name", "user__username"]

    def __str__(self):
        return f"{self.user} is {self.role} in {self.team}"

    def allows(self, action):
        return action in ROLE_ACTIONS[self.role]


# --- Audit trail -----------------------------------------------------------------------------------------------------


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


# --- Runs and logs ---------------------------------------------------------------------------------------------------


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
FINISHED_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class RunKind(models.TextChoices):
    BUILD = "build", "Build"
    DISK_IMAGE = "disk_image", "Disk image"
    BOOT_TEST = "boot_test", "Boot test"
    PROMOTION_APPLY = "promotion_apply", "Promotion"
    HOST_ACTION = "host_action", "Host action"
    HOST_POLL = "host_poll", "Host poll"
    ROLLOUT = "rollout", "Rollout"
    MAINTENANCE = "maintenance", "Maintenance"
    SIGNING = "signing", "Signing"


# Help-desk users read host state and history across teams, so they may watch host runs too.
HELPDESK_RUN_KINDS = (RunKind.HOST_ACTION, RunKind.HOST_POLL, RunKind.ROLLOUT)


def action_to_cancel(kind):
    """The role action needed to cancel a run of this kind: operators stop host actions, developers the rest."""
    return Action.OPERATE if kind in (RunKind.HOST_ACTION, RunKind.HOST_POLL, RunKind.ROLLOUT) else Action.DEVELOP


class RunQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status__in=ACTIVE_STATUSES)

    def finished(self):
        return self.filter(status__in=FINISHED_STATUSES)

    def visible_to(self, user):
        if not user.is_authenticated:
            return self.none()
        if user.is_superuser:
            return self
        visible = models.Q(team__in=Membership.objects.filter(user=user).values("team"))
        if user.is_helpdesk:
            visible |= models.Q(kind__in=HELPDESK_RUN_KINDS)
        return self.filter(visible)

    def stale(self, now=None):
        """Running with no heartbeat for RUN_STALE_AFTER (a parked run: not taken up again RUN_STALE_AFTER after the
        time it waits for), or queued and never picked up for RUN_QUEUED_EXPIRES_AFTER."""
        now = now or timezone.now()
        return self.filter(
            models.Q(status=RunStatus.RUNNING, parked_until__isnull=True,
                     heartbeat_at__lt=now - settings.RUN_STALE_AFTER)
            | models.Q(status=RunStatus.RUNNING, parked_until__lt=now - settings.RUN_STALE_AFTER)
            | models.Q(status=RunStatus.QUEUED, created_at__lt=now - settings.RUN_QUEUED_EXPIRES_AFTER)
        )


class Run(models.Model):
    """One long operation (a build, a conversion, a promotion being applied, a host action) and its log.

    Status only moves through `portal.services.run_*`, each a conditional UPDATE that must change exactly one row, so no run
    starts or ends twice. The log lives in `LogChunk` rows written by `portal.logsink.LogSink`.
    """

    kind = models.CharField(max_length=32, choices=RunKind.choices, db_index=True)
    title = models.CharField(max_length=200)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True)
    phase = models.CharField(max_length=100, blank=True, help_text="What the run is doing now, e.g. 'pushing'.")
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    trigger = models.CharField(max_length=32, default="button", help_text="button, api, webhook, schedule, system")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid of the worker running it")
    exit_reason = models.TextField(blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    parked_until = models.DateTimeField(
        null=True, blank=True, help_text="A running run that waits with no worker (a rollout waiting for its "
                                         "maintenance window) is taken up again then (`portal.services.run_park`).")
    log_lines = models.PositiveBigIntegerField(default=0, help_text="Lines in the log, set as chunks are written.")
    log_archived_at = models.DateTimeField(null=True, blank=True, help_text="When the log moved to object storage "
                                                                            "(portal.logarchive); empty while it is "
                                                                            "in the database.")

    content_type = models.ForeignKey(ContentType, null=True, blank=True, on_delete=models.SET_NULL)
    object_id = models.CharField(max_length=64, blank=True)
    subject = GenericForeignKey("content_type", "object_id")

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["content_type", "object_id"]), models.Index(fields=["team", "-created_at"])]

    def __str__(self):
        return f"{self.get_kind_display()} #{self.pk}: {self.title}"

    def get_absolute_url(self):
        return reverse("portal:run_detail", args=[self.pk])

    @property
    def is_active(self):
        return self.status in ACTIVE_STATUSES

    @property
    def is_finished(self):
        return self.status in FINISHED_STATUSES

    def stoppable(self):
        """Queued runs can always be cancelled. A running host action is one bootc command, atomic on the host: it runs
        to its end rather than being cut off half-way."""
        if self.status == RunStatus.QUEUED:
            return True
        return self.status == RunStatus.RUNNING and self.kind not in HELPDESK_RUN_KINDS

    @property
    def is_parked(self):
        return self.status == RunStatus.RUNNING and self.parked_until is not None

    def duration(self):
        if not self.started_at:
            return None
        return (self.finished_at or timezone.now()) - self.started_at

    def duration_text(self):
        """The duration as people read it: "850 ms", "42 s", "3 min 07 s", "1 h 02 min"; "" before it started."""
        return formatting.duration(self.duration())

    def group_name(self):
        """The Channels group its log and status are published to."""
        return f"run-{self.pk}"


class LogChunk(models.Model):
    """A batch of consecutive log lines of one run: lines first_seq..last_seq, joined by newlines.

    Lines are numbered from 1. `offsets_ms` holds each line's arrival in milliseconds after `created_at`, comma-separated,
    so the viewer can show timestamps without a row per line.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="chunks")
    first_seq = models.PositiveBigIntegerField()
    last_seq = models.PositiveBigIntegerField()
    created_at = models.DateTimeField()
    text = models.TextField()
    offsets_ms = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "first_seq"]
        constraints = [models.UniqueConstraint(fields=["run", "first_seq"], name="one_chunk_per_run_and_first_seq")]
        indexes = [models.Index(fields=["run", "last_seq"])]

    def __str__(self):
        return f"run {self.run_id} lines {self.first_seq}-{self.last_seq}"

    def lines(self):
        return self.text.split("\n")

    def timed_lines(self):
        """(seq, time, text) for each line."""
        offsets = [int(o) for o in self.offsets_ms.split(",")] if self.offsets_ms else []
        out = []
        for i, text in enumerate(self.lines()):
            when = self.created_at + timedelta(milliseconds=offsets[i]) if i < len(offsets) else self.created_at
            out.append((self.first_seq + i, when, text))
        return out


class LogSection(models.Model):
    """Where a section of a run's log starts (a Containerfile step, a bootc-image-builder stage, a runner's group), or
    where an explicit group ends (`kind="end"`). Written by the log sink with the chunk holding the line; see
    `portal.logtext` for what starts a section. A section ends where the next one of the same or a lower level starts."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="sections")
    seq = models.PositiveBigIntegerField(help_text="The line that starts it.")
    kind = models.CharField(max_length=16)
    title = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField()

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="one_section_per_run_and_line")]

    def __str__(self):
        return f"run {self.run_id} line {self.seq}: {self.kind} {self.title}"

    @property
    def level(self):
        return LEVELS.get(self.kind, 1)


# --- Notifications (portal/notifications.py) -------------------------------------------------------------------------


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


class IdentityGroupMapping(models.Model):
    """A group of the identity provider (its `groups` claim) gives its members `role` in `team` at sign-in
    (portal.sso). OIDC_GROUP_MAPPING in the settings holds more of these; the admin site edits these rows."""

    group = models.CharField(max_length=200, help_text="The group's name exactly as the provider's groups claim has it.")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+")
    role = models.CharField(max_length=20, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["group", "team__name"]
        constraints = [models.UniqueConstraint(fields=["group", "team"], name="one_role_per_group_and_team")]

    def __str__(self):
        return f"{self.group} → {self.role} in {self.team}"


# --- Events (portal/events.py) ---------------------------------------------------------------------------------------


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


# --- Retention (portal/retention.py) ---------------------------------------------------------------------------------


class LogArchive(models.Model):
    """A finished run's log, moved out of the database into object storage (`portal.logarchive`).

    The object (`name` in the LOG_ARCHIVE_STORAGE storage) is a gzip file of one member per former `LogChunk`, each a
    JSON line {"first", "last", "at", "offsets", "text"}; `index` holds [first_seq, last_seq, byte offset, byte length]
    of every member, so a reader fetches only the members it needs. The run's `LogSection` rows stay in the database
    (the outline is small and shown with the page)."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="log_archive")
    name = models.CharField(max_length=300)
    lines = models.PositiveBigIntegerField()
    chunks = models.PositiveIntegerField()
    text_bytes = models.PositiveBigIntegerField(help_text="The log's size as it was stored in the database.")
    size = models.PositiveBigIntegerField(help_text="The archive's size in object storage (compressed).")
    sha256 = models.CharField(max_length=64)
    index = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"log of run {self.run_id}: {self.lines} lines in {self.name}"


class RetentionStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


class RetentionRun(models.Model):
    """One pass of the retention steps (run by beat): when, the settings it applied, and what each step removed.

    `removed` is {step name: {"count": n, ...what else the step reports}}; `errors` is {step name: message} for steps
    that failed (the others still ran)."""

    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=RetentionStatus.choices, default=RetentionStatus.RUNNING)
    trigger = models.CharField(max_length=16, default="schedule", help_text="schedule or command")
    policy = models.JSONField(default=dict, help_text="The retention settings this pass applied.")
    removed = models.JSONField(default=dict)
    errors = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self):
        return f"retention {self.started_at:%Y-%m-%d %H:%M} ({self.status})"

    def total_removed(self):
        return sum(int(step.get("count", 0)) for step in self.removed.values())


# --- API tokens ------------------------------------------------------------------------------------------------------


class Scope(models.TextChoices):
    """What an API token may be used for. A scope is a ceiling: the token's user (or team) must still hold the role."""

    READ = "read", "Read everything the owner may see"
    BUILD = "build", "Definitions, revisions and builds: create, trigger, cancel, retry"
    PROMOTE = "promote", "Request promotions and rollbacks"
    APPROVE = "approve", "Approve and reject promotions (user tokens only)"
    OPERATE = "operate", "Act on hosts"
    ADMIN = "admin", "Manage teams and members (user tokens only)"


# Scopes a team token may not hold: approving and administering are a person's acts.
PERSONAL_SCOPES = (Scope.APPROVE, Scope.ADMIN)


class AccessTokenQuerySet(models.QuerySet):
    def usable(self, now=None):
        now = now or timezone.now()
        return self.filter(revoked_at__isnull=True).filter(models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now))


class AccessToken(models.Model):
    """A bearer token for the REST API (/api/v1/), of one user (acting as them, in all their teams) or of one team
    (`team` set: for pipelines that outlive a person; `user` is then the token's own user, a member of that team only,
    made and deactivated with the token by `portal.tokens.token_*`).

    Only the sha256 of the secret is stored: the secret is shown once, when the token is made. `two_factor` says the
    token was made in a sign-in verified with a second factor: teams that require one for approvers accept approvals only
    from such tokens (`portal.access.second_factor_refusal` reads it through the user's `is_verified()`).
    """

    PREFIX = "impt_"

    name = models.CharField(max_length=100)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                             related_name="access_tokens")
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="access_tokens")
    scopes = models.JSONField(default=list)
    token_hash = models.CharField(max_length=64, unique=True)
    hint = models.CharField(max_length=16, help_text="The first characters, to recognise it.")
    two_factor = models.BooleanField(default=False, help_text="Made in a sign-in verified with a second factor.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = AccessTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.name} ({self.hint}…)"

    @classmethod
    def generate(cls):
        return cls.PREFIX + secrets.token_urlsafe(32)

    @staticmethod
    def hash_secret(secret):
        return hashlib.sha256(secret.encode()).hexdigest()

    @property
    def is_team_token(self):
        return self.team_id is not None

    def state(self, now=None):
        """"active", "expired" or "revoked"."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or timezone.now()):
            return "expired"
        return "active"
