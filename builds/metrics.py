"""What builds tell `/metrics` (registered in `BuildsConfig.ready` through `portal.registry`), read at scrape time."""

from django.db.models import Count

from portal.models import RunStatus

from .models import Build, Builder
from .queues import build_queue, conversion_queue


def builder_capacity():
    """{(builder, architecture): runs it takes at once} of the enabled builders."""
    return {(b.name, b.architecture): b.capacity for b in Builder.objects.filter(enabled=True)}


def builder_running_builds():
    """{(builder, "build"): builds running on it} for every enabled builder (0 for the idle ones)."""
    running = dict(Build.objects.filter(run__status=RunStatus.RUNNING, builder__isnull=False)
                   .values_list("builder__name").order_by().annotate(n=Count("id")))
    return {(name, "build"): running.get(name, 0)
            for name in Builder.objects.filter(enabled=True).values_list("name", flat=True)}


def builder_queues():
    """The queues the enabled builders' builds and conversions wait in."""
    names = set()
    for builder in Builder.objects.filter(enabled=True):
        names.update((build_queue(builder), conversion_queue(builder)))
    return names
