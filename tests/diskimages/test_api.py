"""The REST API of disk images, their configurations and kickstarts: who may see and do what (anonymous, outsider,
read-only, allowed), the `build` scope for changes, and bad input answered with a problem document naming the field,
through the same services as the pages."""

import pytest

from builds.diskimages.models import DiskImage, DiskImagePreset
from tests.api.fixtures import problem
from tests.diskimages.rows import KEY

pytestmark = pytest.mark.django_db


# --- Disk images -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("who, status", [("anonymous", 401), ("outsider", 404), ("helpdesk", 404), ("viewer", 200),
                                         ("developer", 200)])
def test_a_disk_image_reads_like_its_page(conversion, personas, api_as, who, status):
    user = None if who == "anonymous" else getattr(personas, who)
    response = api_as(user, "read").get(f"disk-images/{conversion.pk}/")
    assert response.status_code == status
    if status == 200:
        body = response.json()
        assert (body["id"], body["status"], body["types"], body["run"]) == (conversion.pk, "succeeded",
                                                                            ["qcow2", "raw"], conversion.run_id)
        assert sorted(a["type"] for a in body["artifacts"]) == ["qcow2", "raw"]
        artifact = conversion.artifacts.get(image_type="qcow2")
        assert [a["download_url"] for a in body["artifacts"] if a["type"] == "qcow2"] == [
            f"http://testserver{artifact.get_absolute_url()}"]


def test_the_list_filters_as_the_page_does(conversion, personas, api_as):
    api = api_as(personas.viewer, "read")
    assert [d["id"] for d in api.get("disk-images/").json()["items"]] == [conversion.pk]
    assert [d["id"] for d in api.get("disk-images/", {"type": "raw", "status": "succeeded"}).json()["items"]] == [
        conversion.pk]
    assert api.get("disk-images/", {"type": "vmdk"}).json()["items"] == []
    assert api.get("disk-images/", {"status": "failed"}).json()["items"] == []
    assert api_as(personas.outsider, "read").get("disk-images/").json()["items"] == []
    problem(api.get("disk-images/", {"type": "floppy"}), 400)


@pytest.mark.parametrize("who, status", [("anonymous", 401), ("outsider", 400), ("viewer", 403), ("operator", 403),
                                         ("developer", 201)])
def test_only_developers_convert(build, personas, api_as, who, status, django_capture_on_commit_callbacks):
    user = None if who == "anonymous" else getattr(personas, who)
    with django_capture_on_commit_callbacks(execute=False):
        response = api_as(user, "read", "build").post("disk-images/", {"build": build.pk, "types": ["qcow2"]})
    assert response.status_code == status, response.content
    assert DiskImage.objects.count() == (1 if status == 201 else 0)
    if status == 201:
        body = response.json()
        assert (body["build"], body["types"], body["digest"]) == (build.pk, ["qcow2"], build.digest)


def test_converting_needs_the_build_scope(build, personas, api_as):
    body = problem(api_as(personas.developer, "read", "promote").post("disk-images/", {"build": build.pk,
                                                                                      "types": ["qcow2"]}), 403)
    assert body["missing_scope"] == "build"


def test_a_saved_configuration_is_named_by_its_name(build, preset, personas, api_as, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        response = api_as(personas.developer, "build").post(
            "disk-images/", {"build": build.pk, "types": ["qcow2"], "configuration": "ops access"})
    assert response.status_code == 201, response.content
    assert response.json()["configuration"] == "ops access"
    assert DiskImage.objects.get().preset == preset


@pytest.mark.parametrize("change, field", [
    ({"types": ["floppy"]}, "body.types.0"),
    ({"types": []}, "body.types"),
    ({"speed": "fast"}, "body.speed"),
    ({"configuration": "nobody's"}, "body.configuration"),
    ({"build": None}, "body.build"),
    ({"config": {"customizations": {"user": [{"name": "root", "password": 5}]}}}, "body.config"),
])
def test_bad_conversions_name_the_field_and_queue_nothing(build, personas, api_as, change, field):
    body = problem(api_as(personas.developer, "build").post("disk-images/", {"build": build.pk, "types": ["qcow2"],
                                                                            **change}), 400)
    assert body["errors"][0]["field"].startswith(field), body
    assert not DiskImage.objects.exists()


# --- Configurations --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("who, status", [("anonymous", 401), ("outsider", 404), ("viewer", 200), ("developer", 200)])
def test_a_configuration_is_read_by_the_team(preset, personas, api_as, who, status):
    user = None if who == "anonymous" else getattr(personas, who)
    response = api_as(user, "read").get(f"configurations/{preset.pk}/")
    assert response.status_code == status
    if status == 200:
        assert response.json()["config"] == preset.config and response.json()["name"] == "ops access"


def test_developers_save_and_delete_configurations(personas, api_as):
    config = {"customizations": {"kernel": {"append": "console=ttyS0"}}}
    problem(api_as(personas.viewer, "build").post("configurations/", {"team": personas.team.slug, "name": "serial",
                                                                     "config": config}), 403)
    api = api_as(personas.developer, "build")
    created = api.post("configurations/", {"team": personas.team.slug, "name": "serial", "config": config})
    assert created.status_code == 201, created.content
    assert DiskImagePreset.objects.get().config == config
    again = problem(api.post("configurations/", {"team": personas.team.slug, "name": "serial", "config": config}), 400)
    assert again["errors"][0]["field"] == "body.name"
    problem(api_as(personas.outsider, "build").delete(f"configurations/{created.json()['id']}/"), 404)
    assert api.delete(f"configurations/{created.json()['id']}/").status_code == 204
    assert not DiskImagePreset.objects.exists()


def test_a_configuration_bootc_image_builder_would_refuse_is_a_400_naming_it(personas, api_as):
    body = problem(api_as(personas.developer, "build").post("configurations/", {
        "team": personas.team.slug, "name": "bad", "config": {"customizations": {"user": "ops"}}}), 400)
    assert body["errors"][0]["field"] == "body.config"
    assert not DiskImagePreset.objects.exists()


# --- Kickstarts ------------------------------------------------------------------------------------------------------


def test_a_kickstart_installs_a_stage_s_image_and_follows_it(build, personas, api_as):
    response = api_as(personas.developer, "build").post("kickstarts/", {
        "definition": build.definition.pk, "stage": "prod", "ssh_key": KEY})
    assert response.status_code == 200, response.content
    text = response.json()["kickstart"]
    assert f"ostreecontainer --url={build.definition.repository}:prod" in text.replace("'", "")
    assert KEY in text


@pytest.mark.parametrize("who, status", [("anonymous", 401), ("outsider", 400), ("viewer", 403), ("operator", 200)])
def test_developers_and_operators_write_kickstarts(build, personas, api_as, who, status):
    user = None if who == "anonymous" else getattr(personas, who)
    response = api_as(user, "read", "build").post("kickstarts/", {"definition": build.definition.pk, "stage": "prod",
                                                                 "ssh_key": KEY})
    assert response.status_code == status, response.content


@pytest.mark.parametrize("change, field", [
    ({"ssh_key": "not a key"}, "body.ssh_key"),
    ({"timezone": "Mars/Olympus"}, "body.timezone"),
    ({"username": "root"}, "body.username"),
    ({"stage": "staging"}, "body.stage"),
    ({"stage": None}, "body.stage"),
])
def test_bad_kickstart_answers_name_the_field(build, personas, api_as, change, field):
    body = problem(api_as(personas.developer, "build").post("kickstarts/", {
        "definition": build.definition.pk, "stage": "prod", "ssh_key": KEY, **change}), 400)
    assert body["errors"][0]["field"] == field, body
