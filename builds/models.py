"""Image definitions, revisions, builds, disk images, stages and promotions."""

from django.db import models

from portal.models import Team


class Stage(models.Model):
    """A step on the way to production (dev -> test -> prod) for one team; also the tag it moves in each repository."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="stages")
    name = models.CharField(max_length=40)
    position = models.PositiveSmallIntegerField(help_text="Order of the stage: lower comes first.")
    required_approvals = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["team", "position"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="stage_name_unique_per_team"),
            models.UniqueConstraint(fields=["team", "position"], name="stage_position_unique_per_team"),
        ]

    def __str__(self):
        return f"{self.team.slug}/{self.name}"

    @property
    def tag(self):
        return self.name


DEFAULT_STAGES = (("dev", 0), ("test", 1), ("prod", 2))


def dashboard_counts(user, teams):
    """Counts for the dashboard tiles, over `teams` (already limited to what the user may see)."""
    return {"definitions": 0, "builds": 0, "pending_promotions": 0}
