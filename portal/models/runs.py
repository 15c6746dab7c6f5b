"""Runs and their logs: the row every long operation is (`portal.runs` executes it), its log's chunks and sections,
and the archive a finished run's log moves to (`portal.logarchive`)."""

from datetime import timedelta

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.urls import reverse
from django.utils import timezone

from .. import formatting, registry
from ..logtext import LEVELS
from .teams import Action, Membership, Team


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
    KEY_ROTATION = "key_rotation", "Key rotation"


# Help-desk users read host state and history across teams, so they may watch host runs too.
HELPDESK_RUN_KINDS = (RunKind.HOST_ACTION, RunKind.HOST_POLL, RunKind.ROLLOUT)


def action_to_cancel(kind):
    """The role action needed to cancel a run of this kind: the one its feature registered (`registry.run_cancel`),
    else a developer's."""
    return registry.run_cancel_action(kind, Action.DEVELOP)


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
