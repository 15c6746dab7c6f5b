"""Image retention (`builds/retention.py`, `builds/cleanup.py`): a team's policy and each cleanup it makes."""


from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from portal.models import Run, Team, TeamScopedQuerySet

from .builds import ImageDefinition

# --- Image retention (builds/retention.py, builds/cleanup.py) --------------------------------------------------------


class ImageRetentionPolicy(models.Model):
    """Which of a definition's images stay in the registry: the newest `keep_last` builds, builds younger than
    `keep_days` days, and what each stage held in its last `keep_stage_history` promotions. A policy without a
    definition is the team's default. What is in use (a stage holds it, a host boots, stages or keeps it as rollback,
    a disk image or an open promotion refers to it, it is pinned) is kept whatever the numbers say: no policy can
    express deleting it."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="image_retention_policies")
    definition = models.OneToOneField(ImageDefinition, null=True, blank=True, on_delete=models.CASCADE,
                                      related_name="retention_policy")
    keep_last = models.PositiveIntegerField(default=10, validators=[MinValueValidator(1)],
                                            help_text="Keep the images of the newest N builds (at least 1).")
    keep_days = models.PositiveIntegerField(default=30, help_text="Keep images built fewer than D days ago; 0: none "
                                                                  "for their age alone.")
    keep_stage_history = models.PositiveIntegerField(
        default=3, help_text="Keep what each stage held in its last M promotions, so a stage rollback finds it (what "
                             "a stage holds now is always kept).")
    on_schedule = models.BooleanField(
        default=False, help_text="The daily retention pass deletes what the dry run lists, without a person confirming "
                                 "it (each deletion is audited and the pass reports it).")
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team"], condition=models.Q(definition__isnull=True),
                                               name="one_default_image_retention_per_team")]

    def __str__(self):
        return (f"{self.definition or self.team.slug}: newest {self.keep_last}, {self.keep_days} days, "
                f"{self.keep_stage_history} stage promotions")


class ImageCleanupQuerySet(TeamScopedQuerySet):
    team_path = "definition__team"


class ImageCleanup(models.Model):
    """One application of a definition's retention: the digests the dry run listed and someone confirmed (or a
    schedule chose), which were deleted from the registry, which were found in use at the last moment and kept, and
    the registry's garbage collection after. Status, who, when and the log are on `run`."""

    definition = models.ForeignKey(ImageDefinition, on_delete=models.CASCADE, related_name="cleanups")
    run = models.OneToOneField(Run, on_delete=models.PROTECT, related_name="image_cleanup")
    requested = models.JSONField(default=list, help_text="The digests to delete, as the dry run listed them.")
    deleted = models.JSONField(default=list, blank=True)
    kept = models.JSONField(default=dict, blank=True, help_text="{digest: reasons}: in use when the run looked again.")
    failed = models.JSONField(default=dict, blank=True, help_text="{digest: why the registry did not delete it}.")
    bytes_expected = models.BigIntegerField(null=True, blank=True, help_text="What the dry run said would be freed.")
    garbage_collected = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    objects = ImageCleanupQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"Cleanup #{self.pk} of {self.definition}"

    def get_absolute_url(self):
        return reverse("builds:definition_retention", args=[self.definition_id])

    @property
    def team(self):
        return self.definition.team
