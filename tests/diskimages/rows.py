"""Rows for disk image page tests: a succeeded build (its run marked done, with a digest) and a conversion with stored
artifacts, without running podman. The end-to-end tests (test_diskimages_e2e.py) make the same rows for real."""

import hashlib
import os

from django.core.files.base import ContentFile

from builds import services
from builds.diskimages import services as diskimages
from builds.diskimages.models import Artifact, DiskImage
from builds.models import Build
from portal.models import Run, RunStatus

DIGEST = "sha256:" + "ab" * 32
# An SSH key the configurations give the user `ops`.
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@laptop"


def succeeded_build(team, user, *, name="web-os", digest=DIGEST, architecture="amd64"):
    definition = services.definition_create(team=team, user=user, name=name)
    revision = services.revision_create(definition=definition, user=user, containerfile="FROM scratch\n")
    build = services.build_start(revision=revision, user=user)
    Run.objects.filter(pk=build.run_id).update(status=RunStatus.SUCCEEDED)
    Build.objects.filter(pk=build.pk).update(digest=digest, architecture=architecture, os="linux",
                                             repository=definition.repository)
    return Build.objects.with_related().get(pk=build.pk)


def finished_conversion(build, user, *, types=("qcow2",), status=RunStatus.SUCCEEDED, sizes=None):
    """A conversion of `build` that ended with `status`, with one stored artifact per type (random bytes)."""
    disk_image = diskimages.disk_image_request(user=user, build=build, types=list(types))
    Run.objects.filter(pk=disk_image.run_id).update(status=status)
    for i, image_type in enumerate(types):
        data = os.urandom((sizes or {}).get(image_type, 3 * 1024 * 1024 + i))
        artifact = Artifact(disk_image=disk_image, image_type=image_type, filename=f"{build.definition.name}.{image_type}",
                            size=len(data), sha256=hashlib.sha256(data).hexdigest(), format=image_type)
        artifact.file.save(f"disk-images/{disk_image.pk}/{artifact.key}/{artifact.filename}", ContentFile(data),
                           save=False)
        artifact.save()
    return DiskImage.objects.with_related().get(pk=disk_image.pk)
