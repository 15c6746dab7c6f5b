"""The retention pass beat runs (`portal.retention`): one row per pass, with what it removed."""


from django.db import models
from django.utils import timezone


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
