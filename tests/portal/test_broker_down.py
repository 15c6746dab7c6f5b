"""With the workers' broker (Redis) down, asking for a build, a conversion or a host action is not a 500 after the rows
were saved, and never leaves a run "queued" forever: the run fails at once with the reason, and the page says so.
Tested by stopping the suite's own Redis."""

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from builds import services
from builds.diskimages.models import DiskImage
from builds.models import Build
from hosts import actions as host_actions
from hosts import services as host_services
from hosts.models import ActionKind, HostAction
from portal.models import Run, RunStatus
from tests.diskimages.rows import succeeded_build
from tests.plugins.redis_server import broker_stopped

pytestmark = pytest.mark.django_db(transaction=True)  # commits as in production: tasks are queued on commit


def test_a_build_asked_for_while_the_broker_is_down_fails_at_once_with_the_reason(client_for, personas, redis_server):
    definition = services.definition_create(team=personas.team, user=personas.developer, name="web-os")
    services.revision_create(definition=definition, user=personas.developer, containerfile="FROM scratch\n")
    client = client_for(personas.developer)

    with broker_stopped(redis_server):
        response = client.post(f"/images/{definition.pk}/build/", follow=True)

    build = Build.objects.with_related().get()
    assert response.status_code == 200
    assert build.run.status == RunStatus.FAILED and "could not hand the build to a worker" in build.run.exit_reason
    page = response.content.decode()
    assert "could not hand the build to a worker" in page and "Queued build" not in page


def test_a_conversion_asked_for_while_the_broker_is_down_fails_at_once_with_the_reason(client_for, personas, settings,
                                                                                      tmp_path, redis_server):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    build = succeeded_build(personas.team, personas.developer)
    client = client_for(personas.developer)
    data = {"source": "build", "build": build.pk, "types": ["qcow2"], "architecture": "", "rootfs": "xfs",
            "builder_image": settings.DISK_IMAGE_BUILDER_IMAGES[0], "preset": "", "config_text": "", "save_as": "",
            "aws_bucket": "", "aws_region": "", "aws_ami_name": "", "aws_credential": ""}

    with broker_stopped(redis_server):
        response = client.post("/disk-images/new/", data, follow=True)

    disk_image = DiskImage.objects.with_related().get()
    assert response.status_code == 200
    assert disk_image.run.status == RunStatus.FAILED
    assert "could not hand the conversion to a worker" in disk_image.run.exit_reason
    assert "could not hand the conversion to a worker" in response.content.decode()


def test_a_host_action_asked_for_while_the_broker_is_down_fails_at_once_and_frees_the_host(personas, redis_server):
    key = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    host = host_services.host_create(team=personas.team, name="web-01", address="127.0.0.1", actor=None,
                                     host_key=key, poll_now=False)

    with broker_stopped(redis_server):
        action = host_actions.host_action_request(host=host, kind=ActionKind.UPGRADE_CHECK, user=personas.operator)

    run = Run.objects.get(pk=action.run_id)
    assert run.status == RunStatus.FAILED and "could not hand the action to a worker" in run.exit_reason
    action = HostAction.objects.get(pk=action.pk)
    assert not action.active and action.outcome == run.exit_reason
