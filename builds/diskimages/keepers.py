"""Which digests disk images need kept in the registry (registered in `portal.registry.digest_keeper`): a conversion
that is running, or whose files are still there to download, was made from its digest, and a rebuild of that disk
image, or the hosts installed from it, need the same image. A boot test that passed on a digest (or is booting it)
keeps it too: a stage that requires a passing boot test would otherwise promote a digest it can no longer pull."""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Exists, OuterRef, Q

from portal.models import RunStatus

from .models import Artifact, BootTest, DiskImage


def digests_in_use(*, definition, digests) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    present = Exists(Artifact.objects.present().filter(disk_image=OuterRef("pk")))
    images = (DiskImage.objects.filter(digest__in=digests)
              .filter(Q(run__status__in=[RunStatus.QUEUED, RunStatus.RUNNING]) | Q(present))
              .select_related("run").order_by("pk"))
    for image in images:
        doing = "is being made" if image.run.status in (RunStatus.QUEUED, RunStatus.RUNNING) else "was made"
        found[image.digest].append(f"disk image #{image.pk} ({image.get_types_display()}) {doing} from it")
    tests = (BootTest.objects.filter(digest__in=digests,
                                     run__status__in=[RunStatus.SUCCEEDED, RunStatus.QUEUED, RunStatus.RUNNING])
             .select_related("run").order_by("pk"))
    for test in tests:
        doing = "passed on it" if test.run.status == RunStatus.SUCCEEDED else "is booting it"
        found[test.digest].append(f"boot test #{test.pk} {doing}")
    return dict(found)
