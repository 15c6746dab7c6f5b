"""The portal's own registry is shared by every team and the builders hold one login to it that reads and writes
everything, so inside it a team pushes only to REGISTRY_URL/<its slug>/ and builds FROM only that or a namespace listed
in REGISTRY_SHARED_NAMESPACES. A developer of another team can neither overwrite nor read "Platform"'s images by
naming them in a definition or a Containerfile: the refusal comes on save, with the line, and again on the worker.
"""

import pytest
from django.core.exceptions import ValidationError

from tests.builds.fixtures import build_settings, local_builder, oci_registry, podman_store  # noqa: F401


@pytest.fixture
def portal_registry(settings):
    settings.REGISTRY_URL = "127.0.0.1:5999"
    settings.EGRESS_ALLOW = []  # REGISTRY_URL is always allowed; nothing else is
    return settings.REGISTRY_URL


@pytest.mark.django_db
def test_a_team_cannot_point_its_image_at_another_teams_repository(personas, portal_registry):
    from builds import services
    from builds.models import ImageDefinition

    with pytest.raises(ValidationError) as refused:
        services.definition_create(team=personas.other_team, user=personas.outsider, name="web-os",
                                   repository=f"{portal_registry}/platform/web-os")
    [message] = refused.value.message_dict["repository"]
    assert "outside other's part of the portal's registry" in message and f"{portal_registry}/other/" in message
    assert not ImageDefinition.objects.exists()


@pytest.mark.django_db
def test_the_same_registry_under_another_name_is_the_same_registry(personas, portal_registry):
    from builds import services

    with pytest.raises(ValidationError):
        services.definition_create(team=personas.other_team, user=personas.outsider, name="web-os",
                                   repository="localhost:5999/platform/web-os")


@pytest.mark.django_db
def test_moving_an_image_into_another_teams_repository_later_is_refused_too(personas, portal_registry):
    from builds import services

    definition = services.definition_create(team=personas.other_team, user=personas.outsider, name="web-os")
    assert definition.repository == f"{portal_registry}/other/web-os"
    with pytest.raises(ValidationError):
        services.definition_update(definition=definition, user=personas.outsider,
                                   repository=f"{portal_registry}/platform/web-os")
    definition.refresh_from_db()
    assert definition.repository == f"{portal_registry}/other/web-os"


@pytest.mark.django_db
def test_a_teams_own_namespace_and_other_registries_are_accepted(personas, portal_registry):
    from builds import services

    own = services.definition_create(team=personas.team, user=personas.developer, name="a",
                                     repository=f"{portal_registry}/platform/tools/a")
    elsewhere = services.definition_create(team=personas.team, user=personas.developer, name="b",
                                           repository="quay.io/other/b")
    assert own.pk and elsewhere.pk


@pytest.mark.django_db
@pytest.mark.parametrize("containerfile", [
    "FROM {registry}/platform/web-os:prod\nRUN true\n",
    "FROM {registry}/platform/web-os@sha256:" + "a" * 64 + "\nRUN true\n",
    "FROM localhost/base:latest\nCOPY --from={registry}/platform/secrets:1 /etc/x /x\n",
    "ARG BASE={registry}/platform/web-os\nFROM ${{BASE}}:prod\nRUN true\n",
])
def test_another_team_cannot_build_from_a_teams_images(personas, portal_registry, containerfile):
    from builds import services

    definition = services.definition_create(team=personas.other_team, user=personas.outsider, name="web-os")
    with pytest.raises(ValidationError) as refused:
        services.revision_create(definition=definition, user=personas.outsider,
                                 containerfile=containerfile.format(registry=portal_registry))
    [message] = refused.value.message_dict["containerfile"]
    assert message.startswith("line ") and f"another team's part of the portal's registry ({portal_registry}/platform/)" \
        in message
    assert not definition.revisions.exists()


@pytest.mark.django_db
def test_shared_namespaces_and_the_teams_own_images_may_be_built_from(personas, portal_registry, settings):
    from builds import services

    settings.REGISTRY_SHARED_NAMESPACES = ["base"]
    definition = services.definition_create(team=personas.other_team, user=personas.outsider, name="web-os")
    revision = services.revision_create(
        definition=definition, user=personas.outsider,
        containerfile=f"FROM {portal_registry}/base/centos-bootc:stream10\n"
                      f"COPY --from={portal_registry}/other/tools:1 /bin/x /x\nRUN true\n")
    assert revision.number == 1
    with pytest.raises(ValidationError) as refused:
        services.definition_create(team=personas.other_team, user=personas.outsider, name="b",
                                   repository=f"{portal_registry}/base/b")
    assert "pushes only to repositories under" in refused.value.message_dict["repository"][0]


@pytest.mark.slow
@pytest.mark.django_db
def test_a_build_into_another_teams_repository_is_refused_before_podman_starts(
        personas, settings, oci_registry, local_builder, build_settings):  # noqa: F811
    """A definition written before the rule (or straight into the database) is checked again on the worker."""
    from builds import pipeline, services
    from builds.models import Build, BuildStatus, ImageDefinition
    from portal.logsink import lines_after

    definition = services.definition_create(team=personas.other_team, user=personas.outsider, name="web-os")
    revision = services.revision_create(definition=definition, user=personas.outsider,
                                        containerfile="FROM localhost/base:latest\nRUN echo never-run\n")
    ImageDefinition.objects.filter(pk=definition.pk).update(repository=f"{oci_registry.address}/platform/web-os")
    revision.definition.refresh_from_db()
    build = services.build_start(revision=revision, user=personas.outsider)
    assert build.repository == f"{oci_registry.address}/platform/web-os"
    pipeline.build_execute(build.pk)
    build = Build.objects.with_related().get(pk=build.pk)
    log = "\n".join(text for _, text in lines_after(build.run))
    assert build.status == BuildStatus.FAILED
    assert build.run.exit_reason.startswith("Refused before podman started:")
    assert "outside other's part of the portal's registry" in build.run.exit_reason
    assert "STEP" not in log and "never-run" not in log
