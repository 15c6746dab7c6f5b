"""Access helpers for disk images, their files, configurations and AWS credentials.

Same rule as `portal.access`: outside the user's teams an object does not exist (404); a role that may see but not act
gets 403.
"""

from portal.access import get_object_for_user
from portal.models import Action

from .models import Artifact, BootTest, CloudCredential, DiskImage, DiskImagePreset


def get_disk_image_for_user(user, pk, *, action=Action.VIEW):
    return get_object_for_user(DiskImage.objects.with_related(), user, team_of=lambda d: d.team, action=action, pk=pk)


def get_boot_test_for_user(user, pk, *, action=Action.VIEW):
    return get_object_for_user(BootTest.objects.with_related(), user, team_of=lambda t: t.team, action=action, pk=pk)


def get_artifact_for_user(user, key, *, action=Action.VIEW):
    """By the artifact's random key (the download URL): outside the user's teams it does not exist."""
    return get_object_for_user(
        Artifact.objects.select_related("disk_image", "disk_image__team", "disk_image__definition", "disk_image__run"),
        user, team_of=lambda a: a.disk_image.team, action=action, key=key,
    )


def get_preset_for_user(user, pk, *, action=Action.VIEW):
    return get_object_for_user(DiskImagePreset.objects.select_related("team"), user, team_of=lambda p: p.team,
                               action=action, pk=pk)


def get_cloud_credential_for_user(user, pk, *, action=Action.ADMIN):
    return get_object_for_user(CloudCredential.objects.select_related("team"), user, team_of=lambda c: c.team,
                               action=action, pk=pk)
