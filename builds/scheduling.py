"""When scheduled rebuilds are due. Beat calls `builds.tasks.builds_schedule_due` every few minutes."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import ImageDefinition, Schedule

PERIODS = {Schedule.DAILY: timedelta(days=1), Schedule.WEEKLY: timedelta(days=7)}


def next_run_after(schedule, after):
    """The next time `schedule` is due after `after`: at BUILD_SCHEDULE_HOUR UTC (nightly), on Sundays for weekly."""
    if schedule not in PERIODS:
        return None
    at = after.replace(hour=settings.BUILD_SCHEDULE_HOUR, minute=0, second=0, microsecond=0)
    if schedule == Schedule.WEEKLY:
        at += timedelta(days=(6 - at.weekday()) % 7)
    while at <= after:
        at += PERIODS[schedule]
    return at


def schedule_next(definition, *, after=None):
    """Set (and save) when the definition is next due; None when it has no schedule."""
    definition.next_scheduled_at = next_run_after(definition.schedule, after or timezone.now())
    ImageDefinition.objects.filter(pk=definition.pk).update(next_scheduled_at=definition.next_scheduled_at)
    return definition.next_scheduled_at
