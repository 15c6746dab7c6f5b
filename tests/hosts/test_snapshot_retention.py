"""Host snapshots do not grow forever: past HOST_SNAPSHOT_KEEP_DAYS only the change points stay (a new booted, staged
or rollback digest, a queued rollback, output turning unreadable or readable again), the newest of each host stays,
and unchanged repeats go. The pass is the core's (portal.retention), which hosts joins through the registry."""

from datetime import timedelta

import pytest
from django.utils import timezone

from hosts.bootc import BootcStatus, Entry, ImageInfo
from hosts.models import Host, HostSnapshot
from hosts.retention import thin_snapshots
from portal import retention

pytestmark = pytest.mark.django_db

A, B, C = ("sha256:" + c * 64 for c in "abc")
REF = "reg.example.com/platform/web-os:prod"


def status(booted, staged=None, fetched="2026-01-01T00:00:00Z"):
    """A parsed status; `fetched` changes what bootc prints (the cached update's timestamp) but not the host's state."""
    cached = ImageInfo(image=REF, digest=booted, timestamp=fetched)
    return BootcStatus(kind="BootcHost", spec_image=ImageInfo(image=REF), host_type="bootcHost",
                       booted=Entry(image=ImageInfo(image=REF, digest=booted), cached_update=cached),
                       staged=Entry(image=ImageInfo(image=REF, digest=staged)) if staged else None).to_dict()


@pytest.fixture
def host(personas):
    return Host.objects.create(team=personas.team, name="web-01", address="127.0.0.1", port=22)


def snapshot(host, days_ago, parsed, error=""):
    return HostSnapshot.objects.create(host=host, taken_at=timezone.now() - timedelta(days=days_ago), raw="{}",
                                       parsed=parsed, error=error, status_hash=f"{days_ago}")


def test_only_the_change_points_of_old_snapshots_stay(host, settings):
    settings.HOST_SNAPSHOT_KEEP_DAYS = 14
    history = [
        (60, status(A), "first"),
        (59, status(A, fetched="2026-01-02"), None),
        (58, status(A, fetched="2026-01-03"), None),
        (50, status(A, staged=B), "staged"),
        (49, status(A, staged=B, fetched="2026-01-05"), None),
        (40, status(B), "booted"),
        (39, None, "unreadable"),
        (38, None, None),  # the same error again
        (37, status(B, fetched="2026-02-01"), "readable again"),
        (30, status(B, fetched="2026-02-02"), None),
        (10, status(B, fetched="2026-03-01"), "recent"),
        (9, status(B, fetched="2026-03-02"), "recent"),
        (1, status(B, fetched="2026-03-10"), "newest"),
    ]
    made = {days: snapshot(host, days, parsed, error="" if parsed else "not JSON") for days, parsed, _ in history}
    kept_days = sorted((days for days, _, why in history if why), reverse=True)

    result = thin_snapshots(now=timezone.now())

    left = sorted((made_days for made_days, s in made.items() if HostSnapshot.objects.filter(pk=s.pk).exists()),
                  reverse=True)
    assert left == kept_days
    assert result == {"count": len(history) - len(kept_days), "hosts": 1}


def test_the_newest_snapshot_of_a_quiet_host_stays_however_old(host, settings):
    settings.HOST_SNAPSHOT_KEEP_DAYS = 14
    first = snapshot(host, 90, status(A))
    newest = snapshot(host, 80, status(A, fetched="2026-01-09"))
    thin_snapshots(now=timezone.now())
    assert set(HostSnapshot.objects.values_list("pk", flat=True)) == {first.pk, newest.pk}


def test_zero_days_keeps_every_snapshot(host, settings):
    settings.HOST_SNAPSHOT_KEEP_DAYS = 0
    for days in (50, 49, 48):
        snapshot(host, days, status(A, fetched=str(days)))
    assert thin_snapshots(now=timezone.now()) == {"count": 0, "hosts": 0}
    assert HostSnapshot.objects.count() == 3


def test_the_retention_pass_thins_snapshots_and_records_it(host, settings):
    settings.HOST_SNAPSHOT_KEEP_DAYS = 14
    for days in range(40, 20, -1):
        snapshot(host, days, status(A, fetched=str(days)))
    record = retention.retention_run()
    assert record.removed["host_snapshots"] == {"label": "host snapshots thinned", "count": 18, "hosts": 1}
    assert HostSnapshot.objects.count() == 2  # the first and the newest
