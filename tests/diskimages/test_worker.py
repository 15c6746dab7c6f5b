"""A conversion through a real Celery worker that listens only on the `images` queue: from the request form to a file
downloaded from the conversion page, with the stand-in bootc-image-builder image."""

import hashlib

import pytest
from django.urls import reverse

from builds import pipeline, services
from builds.diskimages.models import DiskImage
from builds.models import Build
from builds.queues import local_queues
from portal.logsink import lines_after
from portal.models import RunStatus
from tests.builds.fixtures import BASE_IMAGE
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


def test_a_request_from_the_form_is_converted_by_an_images_worker_and_downloaded(
        start_worker, in_process_worker, client_for, personas, oci_registry, local_builder, build_settings,
        diskimage_settings):
    definition = services.definition_create(team=personas.team, user=personas.developer, name="worker-os")
    revision = services.revision_create(definition=definition, user=personas.developer,
                                        containerfile=f"FROM {BASE_IMAGE}\nLABEL containers.bootc=1\n")
    build = services.build_start(revision=revision, user=personas.developer)
    pipeline.build_execute(build.pk)
    build = Build.objects.with_related().get(pk=build.pk)
    assert build.succeeded, build.run.exit_reason

    start_worker(queues=local_queues()[1], concurrency=1, BUILD_PULL_POLICY="never", DISK_IMAGE_BUILDER_PULL="never",
                 DISK_IMAGE_BUILDER_IMAGES=diskimage_settings.DISK_IMAGE_BUILDER_IMAGES[0],
                 MEDIA_ROOT=diskimage_settings.MEDIA_ROOT)
    client = client_for(personas.developer)
    response = client.post(reverse("diskimages:create"), {
        "source": "build", "build": build.pk, "types": ["qcow2"], "architecture": "", "rootfs": "xfs",
        "builder_image": diskimage_settings.DISK_IMAGE_BUILDER_IMAGES[0], "preset": "",
        "config_text": '[[customizations.user]]\nname = "ops"\ngroups = ["wheel"]\n', "save_as": "",
        "aws_bucket": "", "aws_region": "", "aws_ami_name": "", "aws_credential": ""})
    disk_image = DiskImage.objects.get()
    assert response.status_code == 302 and response["Location"] == disk_image.get_absolute_url()
    wait_for(lambda: DiskImage.objects.get().run.is_finished, timeout=90, what="the conversion to end")
    disk_image = DiskImage.objects.with_related().get()
    log = "\n".join(text for _, text in lines_after(disk_image.run))
    assert disk_image.run.status == RunStatus.SUCCEEDED, disk_image.run.exit_reason + "\n" + log
    assert disk_image.run.worker and disk_image.run.worker.split(":")[1].isdigit()
    artifact = disk_image.artifacts.get()
    page = client.get(disk_image.get_absolute_url()).content.decode()
    assert artifact.get_absolute_url() in page and artifact.sha256 in page
    body = b"".join(client.get(artifact.get_absolute_url()).streaming_content)
    assert hashlib.sha256(body).hexdigest() == artifact.sha256
