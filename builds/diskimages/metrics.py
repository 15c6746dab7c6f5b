"""What disk images tell `/metrics` (registered in `DiskImagesConfig.ready`), read at scrape time."""

from django.db.models import Count

from builds.models import Builder
from portal.models import RunStatus

from .models import DiskImage


def builder_running_conversions():
    """{(builder, "disk_image"): conversions running on it} for every enabled builder (0 for the idle ones)."""
    running = dict(DiskImage.objects.filter(run__status=RunStatus.RUNNING, builder__isnull=False)
                   .values_list("builder__name").order_by().annotate(n=Count("id")))
    return {(name, "disk_image"): running.get(name, 0)
            for name in Builder.objects.filter(enabled=True).values_list("name", flat=True)}
