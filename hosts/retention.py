"""Host snapshots that do not grow forever: the retention step hosts registers in the core (`portal.retention`).

A snapshot is written whenever a host's `bootc status` output differs from the last one, and much of that difference
is noise (timestamps of the last fetch, cached update metadata): most snapshots repeat the state before them. Older
than HOST_SNAPSHOT_KEEP_DAYS, a snapshot is kept only where something changed: the first of the host, one whose state
the timeline tells apart from the snapshot before it (`hosts.timeline.diff`: another booted, staged or rollback
digest, a queued rollback, a pin), one where the output became readable or unreadable (or said another error), and
the newest of each host. Unchanged repeats are deleted. Recent snapshots are all kept, whatever they hold.

This covers every way a host's status reaches the portal: polls over SSH and statuses hosts report themselves both
write through `hosts.poller` into `HostSnapshot`.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from . import timeline
from .models import HostSnapshot

PAGE = 500  # snapshots read per query, oldest first


def is_change(previous, snapshot) -> bool:
    """Whether `snapshot` records a change from `previous` (the snapshot before it; None for a host's first)."""
    if previous is None:
        return True
    if (previous.parsed is None) != (snapshot.parsed is None):
        return True
    if snapshot.parsed is None:
        return previous.error != snapshot.error
    return bool(timeline.diff(previous.parsed, snapshot.parsed))


def repeats(host_id, cutoff, since=None):
    """Ids of the host's snapshots taken before `cutoff` (and from `since`, when given) that only repeat the state
    before them."""
    qs = HostSnapshot.objects.filter(host_id=host_id).order_by("taken_at", "id").only("id", "taken_at", "parsed",
                                                                                        "error")
    newest_id = (HostSnapshot.objects.filter(host_id=host_id).order_by("-taken_at", "-id")
                 .values_list("id", flat=True).first())
    previous, last_key = None, None
    if since is not None:  # start from the last snapshot before `since`: what the first one is compared with
        previous = qs.filter(taken_at__lt=since).order_by("-taken_at", "-id").first()
        if previous is not None:
            last_key = (previous.taken_at, previous.id)
    doomed = []
    while True:
        page = qs if last_key is None else qs.filter(taken_at__gte=last_key[0]).exclude(taken_at=last_key[0],
                                                                                            id__lte=last_key[1])
        rows = list(page[:PAGE])
        for snapshot in rows:
            if snapshot.taken_at >= cutoff:
                return doomed
            if not is_change(previous, snapshot) and snapshot.id != newest_id:
                doomed.append(snapshot.id)
            previous = snapshot
        if len(rows) < PAGE:
            return doomed
        last_key = (rows[-1].taken_at, rows[-1].id)


def thin_snapshots(*, now, previous=None) -> dict:
    """The retention step: delete the unchanged repeats older than HOST_SNAPSHOT_KEEP_DAYS, host by host. After a
    first pass, only the snapshots that came of age since the last pass (`previous`) are looked at: the older ones
    were thinned then."""
    days = settings.HOST_SNAPSHOT_KEEP_DAYS
    if not days:
        return {"count": 0, "hosts": 0}
    cutoff = now - timedelta(days=days)
    since = previous - timedelta(days=days + 1) if previous is not None else None
    due = HostSnapshot.objects.filter(taken_at__lt=cutoff)
    if since is not None:
        due = due.filter(taken_at__gte=since)
    host_ids = due.order_by().values_list("host_id", flat=True).distinct()
    deleted = hosts = 0
    for host_id in list(host_ids):
        doomed = repeats(host_id, cutoff, since)
        for start in range(0, len(doomed), 1000):
            deleted += HostSnapshot.objects.filter(pk__in=doomed[start:start + 1000]).delete()[0]
        hosts += 1 if doomed else 0
    return {"count": deleted, "hosts": hosts}
