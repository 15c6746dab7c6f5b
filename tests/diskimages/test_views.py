"""Disk image pages: who may see and do what (anonymous, outsider, read-only, allowed), the request form and its bad
input (each error on the field it is about), configurations (presets), the team's settings, kickstarts, retention."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from builds.diskimages import services as diskimages
from builds.diskimages import services_presets as presets
from builds.diskimages.models import Artifact, ArtifactRetention, CloudCredential, DiskImage, DiskImagePreset
from builds.releases.models import StageHistory
from portal.models import AuditEvent, RunStatus
from tests.diskimages.rows import DIGEST, KEY, finished_conversion, succeeded_build
from tests.helpers import CORPUS

# --- Access ----------------------------------------------------------------------------------------------------------


def status_of(client_for, user, method, url, data=None):
    client = client_for(user)
    return (client.post(url, data or {}) if method == "post" else client.get(url)).status_code


@pytest.mark.parametrize("who, expected", [("anonymous", 302), ("outsider", 404), ("helpdesk", 404), ("viewer", 200),
                                           ("developer", 200), ("superuser", 200)])
def test_a_conversion_page_is_seen_by_the_team_only(client_for, personas, conversion, who, expected):
    user = None if who == "anonymous" else getattr(personas, who)
    assert status_of(client_for, user, "get", conversion.get_absolute_url()) == expected
    assert status_of(client_for, user, "get", f"/disk-images/{conversion.pk}/config.toml") == expected


@pytest.mark.parametrize("action", ["cancel", "retry", "delete-files"])
@pytest.mark.parametrize("who, expected", [("anonymous", 302), ("outsider", 404), ("helpdesk", 404), ("viewer", 403),
                                           ("operator", 403)])
def test_acting_on_a_conversion_needs_the_developer_role(client_for, personas, conversion, action, who, expected):
    """Cancel and Retry are the core's run views (portal:run_cancel, portal:run_retry), as for every run."""
    user = None if who == "anonymous" else getattr(personas, who)
    url = (f"/runs/{conversion.run_id}/{action}/" if action in ("cancel", "retry")
           else f"/disk-images/{conversion.pk}/{action}/")
    assert status_of(client_for, user, "post", url) == expected
    assert DiskImage.objects.count() == 1 and Artifact.objects.present().count() == 2


@pytest.mark.parametrize("who, expected", [("anonymous", 302), ("outsider", 404), ("helpdesk", 404), ("viewer", 200)])
def test_a_files_checksum_is_seen_by_the_team_only(client_for, personas, conversion, who, expected):
    user = None if who == "anonymous" else getattr(personas, who)
    artifact = conversion.artifacts.first()
    assert status_of(client_for, user, "get", f"{artifact.get_absolute_url()}sha256/") == expected


@pytest.mark.parametrize("who, export, delete", [("anonymous", 302, 302), ("outsider", 404, 404), ("viewer", 200, 403),
                                                 ("operator", 200, 403)])
def test_a_configuration_is_exported_by_its_team_and_deleted_only_by_its_developers(client_for, personas, preset, who,
                                                                                    export, delete):
    user = None if who == "anonymous" else getattr(personas, who)
    assert status_of(client_for, user, "get", f"/disk-images/configurations/{preset.pk}/export/") == export
    assert status_of(client_for, user, "post", f"/disk-images/configurations/{preset.pk}/delete/") == delete
    assert DiskImagePreset.objects.filter(pk=preset.pk).exists()


@pytest.fixture
def aws_credential(personas):
    return presets.cloud_credential_save(team=personas.team, user=personas.admin, name="ec2",
                                            access_key_id="AKIAIOSFODNN7EXAMPLE", secret_access_key="wJalrXUtnFEMI")


@pytest.mark.parametrize("who, expected", [("anonymous", 302), ("outsider", 404), ("viewer", 403), ("developer", 403),
                                           ("admin", 302)])
def test_only_team_admins_delete_aws_credentials(client_for, personas, aws_credential, who, expected):
    user = None if who == "anonymous" else getattr(personas, who)
    assert status_of(client_for, user, "post", f"/disk-images/credentials/{aws_credential.pk}/delete/") == expected
    assert CloudCredential.objects.filter(pk=aws_credential.pk).exists() == (who != "admin")


def test_importing_a_configuration_needs_the_developer_role(client_for, personas):
    from django.core.files.uploadedfile import SimpleUploadedFile

    path = CORPUS / "bib-config-01-user.toml"
    data = {"name": "imported", "file": SimpleUploadedFile(path.name, path.read_bytes()), "format": ""}
    assert status_of(client_for, personas.viewer, "post", "/disk-images/configurations/import/", data) == 403
    assert status_of(client_for, None, "post", "/disk-images/configurations/import/", data) == 302
    assert not DiskImagePreset.objects.exists()


def test_a_developer_retries_and_deletes_files(client_for, personas, conversion, django_capture_on_commit_callbacks):
    client = client_for(personas.developer)
    response = client.post(f"/runs/{conversion.run_id}/retry/")
    retry = DiskImage.objects.exclude(pk=conversion.pk).get()
    assert response.url == retry.get_absolute_url() and retry.retry_of == conversion and retry.types == conversion.types
    with django_capture_on_commit_callbacks(execute=False):
        client.post(f"/disk-images/{conversion.pk}/delete-files/")
    assert Artifact.objects.present().count() == 0
    assert AuditEvent.objects.filter(action="artifact.delete").count() == 2


def test_a_queued_conversion_is_cancelled_at_once(client_for, personas, build):
    disk_image = diskimages.disk_image_request(user=personas.developer, build=build, types=["qcow2"])
    response = client_for(personas.developer).post(f"/runs/{disk_image.run_id}/cancel/",
                                                   {"next": disk_image.get_absolute_url()})
    assert response["Location"] == disk_image.get_absolute_url()
    disk_image.run.refresh_from_db()
    assert disk_image.run.status == RunStatus.CANCELLED


@pytest.mark.parametrize("url, viewer, developer", [
    ("/disk-images/", 200, 200),
    ("/disk-images/new/", 403, 200),
    ("/disk-images/configurations/", 200, 200),
    ("/disk-images/configurations/new/", 403, 200),
    ("/disk-images/configurations/import/", 403, 200),
    ("/teams/platform/disk-images/", 200, 200),
    ("/kickstarts/new/", 403, 200),
])
def test_pages_for_viewers_and_developers(client_for, personas, conversion, url, viewer, developer):
    assert status_of(client_for, personas.viewer, "get", url) == viewer
    assert status_of(client_for, personas.developer, "get", url) == developer
    assert status_of(client_for, None, "get", url) == 302


def test_operators_write_kickstarts_too(client_for, personas, conversion):
    assert status_of(client_for, personas.operator, "get", "/kickstarts/new/") == 200


def test_the_list_shows_only_the_users_teams(client_for, personas, conversion, media):
    other = succeeded_build(personas.other_team, personas.outsider, name="secret-os", digest="sha256:" + "cd" * 32)
    finished_conversion(other, personas.outsider)
    page = client_for(personas.developer).get("/disk-images/").content.decode()
    assert "web-os" in page and "secret-os" not in page
    page = client_for(personas.outsider).get("/disk-images/").content.decode()
    assert "secret-os" in page and "web-os" not in page


def test_the_list_filters_by_status_type_and_search(client_for, personas, conversion, build):
    failed = finished_conversion(build, personas.developer, types=["vmdk"], status=RunStatus.FAILED)
    client = client_for(personas.developer)
    assert f"#{failed.pk}<" in client.get("/disk-images/?type=vmdk").content.decode()
    assert f"#{conversion.pk}<" not in client.get("/disk-images/?type=vmdk").content.decode()
    assert f"#{conversion.pk}<" in client.get("/disk-images/?status=succeeded").content.decode()
    assert "Nothing matches" in client.get("/disk-images/?q=nothing-like-this").content.decode()


@pytest.mark.parametrize("url", ["/disk-images/?q=web%00", "/disk-images/configurations/?q=%00ops"])
def test_a_search_with_a_nul_character_is_answered(client_for, personas, conversion, preset, url):
    response = client_for(personas.viewer).get(url)
    assert response.status_code == 200 and ("web-os" in response.content.decode() or "ops access" in
                                            response.content.decode())


def test_an_empty_list_says_what_will_appear_and_how(client_for, personas, media):
    page = client_for(personas.developer).get("/disk-images/").content.decode()
    assert "No disk images yet" in page and "New disk image" in page


def test_the_conversion_page_shows_the_files_with_their_checksums(client_for, personas, conversion):
    page = client_for(personas.viewer).get(conversion.get_absolute_url()).content.decode()
    for artifact in conversion.artifacts.all():
        assert artifact.get_absolute_url() in page and artifact.sha256 in page
    assert 'id="log"' in page  # the live log viewer
    assert 'hx-trigger="run:changed from:document"' in page  # the status and files refresh as the viewer sees it move
    assert "Delete" not in page  # a viewer sees no delete buttons


def test_a_finished_conversion_stops_the_live_polling(client_for, personas, conversion):
    response = client_for(personas.viewer).get(conversion.get_absolute_url(), HTTP_HX_REQUEST="true",
                                               HTTP_HX_TARGET="diskimage-live")
    assert response.status_code == 286


# --- The request form ------------------------------------------------------------------------------------------------


def request_data(build, **overrides):
    data = {"source": "build", "build": build.pk, "types": ["qcow2"], "architecture": "", "rootfs": "xfs",
            "builder_image": "quay.io/centos-bootc/bootc-image-builder:latest", "preset": "", "config_text": "",
            "save_as": "", "aws_bucket": "", "aws_region": "", "aws_ami_name": "", "aws_credential": ""}
    data.update(overrides)
    return data


def test_a_request_queues_a_conversion_with_the_presets_config(client_for, personas, build, preset):
    response = client_for(personas.developer).post("/disk-images/new/", request_data(
        build, types=["qcow2", "anaconda-iso"], preset=preset.pk, rootfs="ext4",
        builder_image="registry.redhat.io/rhel9/bootc-image-builder:latest"))
    disk_image = DiskImage.objects.get()
    assert response.status_code == 302 and response.url == disk_image.get_absolute_url()
    assert disk_image.types == ["qcow2", "anaconda-iso"] and disk_image.rootfs == "ext4"
    assert disk_image.config == preset.config and disk_image.preset_name == "ops access"
    assert disk_image.digest == DIGEST and disk_image.architecture == "amd64"
    assert disk_image.builder_image == "registry.redhat.io/rhel9/bootc-image-builder:latest"
    assert disk_image.run.status == RunStatus.QUEUED
    assert AuditEvent.objects.filter(action="disk_image.request").exists()


def test_a_pasted_config_can_be_saved_as_a_preset(client_for, personas, build):
    config = f'[[customizations.user]]\nname = "ops"\nkey = "{KEY}"\n'
    client_for(personas.developer).post("/disk-images/new/", request_data(build, config_text=config, save_as="pasted"))
    assert DiskImage.objects.get().config == {"customizations": {"user": [{"name": "ops", "key": KEY}]}}
    assert DiskImagePreset.objects.get(name="pasted").config == DiskImage.objects.get().config


def form_errors(response, field):
    return response.context["form"].errors.get(field, [])


def test_a_key_the_type_does_not_accept_is_a_form_error_naming_it(client_for, personas, build):
    preset = presets.preset_save(team=personas.team, user=personas.developer, name="iso only", config={
        "customizations": {"installer": {"kickstart": {"contents": "text\nautopart\n"}}}})
    response = client_for(personas.developer).post("/disk-images/new/", request_data(build, preset=preset.pk))
    assert response.status_code == 200 and not DiskImage.objects.exists()
    assert form_errors(response, "preset")[0].startswith("customizations.installer: qcow2 does not accept it")


@pytest.mark.parametrize("config, message", [
    ('[[customizations.user]]\nname = "ops"\nkey = "ssh-rsa not-a-key"\n', "customizations.user[0].key:"),
    ('[[customizations.user]]\nname = "ops"\npassword = "$6$salt"\n', "customizations.user[0].password:"),
    ('[[customizations.filesystem]]\nmountpoint = "/"\nminsize = "20"\n',
     'customizations.filesystem[0].minsize: "20" has no unit'),
    ('[customizations]\nbirds = 1\n', "customizations.birds: unknown key"),
    ('{"customizations": ', "config.json: cannot decode JSON"),
])
def test_bad_pasted_configs_are_form_errors_naming_the_field(client_for, personas, build, config, message):
    response = client_for(personas.developer).post("/disk-images/new/", request_data(build, config_text=config))
    assert response.status_code == 200 and not DiskImage.objects.exists()
    errors = form_errors(response, "config_text")
    assert any(message in e for e in errors), errors
    assert message in response.content.decode().replace("&quot;", '"')


def test_an_architecture_the_image_is_not_built_for_is_refused(client_for, personas, build):
    response = client_for(personas.developer).post("/disk-images/new/", request_data(build, architecture="arm64"))
    assert form_errors(response, "architecture")[0].startswith("Architecture mismatch: the image is built for amd64")


def test_half_given_ami_settings_are_refused(client_for, personas, build):
    response = client_for(personas.developer).post("/disk-images/new/", request_data(
        build, types=["ami"], aws_bucket="my-bucket"))
    assert "all three" in form_errors(response, "aws_bucket")[0]
    response = client_for(personas.developer).post("/disk-images/new/", request_data(
        build, types=["qcow2"], aws_bucket="my-bucket", aws_region="eu-west-1", aws_ami_name="x y z"))
    assert "only apply to the ami type" in form_errors(response, "aws_bucket")[0]
    response = client_for(personas.developer).post("/disk-images/new/", request_data(
        build, types=["ami"], aws_bucket="My_Bucket", aws_region="europe", aws_ami_name="ok name"))
    assert "is not an S3 bucket name" in " ".join(form_errors(response, "aws_bucket"))
    assert "is not an AWS region" in " ".join(form_errors(response, "aws_region"))
    assert "Pick the AWS credentials" in " ".join(form_errors(response, "aws_credential"))


def test_only_configured_builder_images_run(client_for, personas, build):
    response = client_for(personas.developer).post("/disk-images/new/", request_data(
        build, builder_image="docker.io/evil/root-shell:latest"))
    assert form_errors(response, "builder_image") and not DiskImage.objects.exists()


IMAGE_BUILDER = "ghcr.io/osbuild/image-builder-cli:latest"


def test_image_builder_is_the_tool_a_new_installation_offers_first(client_for, personas, build, media, settings):
    settings.DISK_IMAGE_BACKEND = "image-builder"
    settings.DISK_IMAGE_IMAGE_BUILDER_IMAGE = IMAGE_BUILDER
    form = client_for(personas.developer).get(f"/disk-images/new/?build={build.pk}").context["form"]
    groups = form.fields["builder_image"].choices
    assert [label for label, _options in groups] == ["osbuild image-builder", "bootc-image-builder (archived upstream)"]
    assert groups[0][1] == [(f"image-builder|{IMAGE_BUILDER}", f"osbuild image-builder: {IMAGE_BUILDER}")]
    client_for(personas.developer).post("/disk-images/new/", request_data(
        build, builder_image=f"image-builder|{IMAGE_BUILDER}"))
    disk_image = DiskImage.objects.get()
    assert disk_image.backend == "image-builder" and disk_image.builder_image == IMAGE_BUILDER


def test_each_conversion_picks_its_tool_and_a_retry_keeps_it(client_for, personas, build, media, settings):
    settings.DISK_IMAGE_BACKEND = "image-builder"
    settings.DISK_IMAGE_IMAGE_BUILDER_IMAGE = IMAGE_BUILDER
    client_for(personas.developer).post("/disk-images/new/", request_data(
        build, types=["anaconda-iso"], builder_image="bib|registry.redhat.io/rhel9/bootc-image-builder:latest"))
    first = DiskImage.objects.get()
    assert first.backend == "bib" and first.builder_image == "registry.redhat.io/rhel9/bootc-image-builder:latest"
    first.run.status = RunStatus.FAILED
    first.run.save(update_fields=["status"])
    again = diskimages.disk_image_retry(disk_image=first, user=personas.developer)
    assert (again.backend, again.builder_image, again.types) == ("bib", first.builder_image, ["anaconda-iso"])


def test_image_builder_refuses_anaconda_iso_before_the_run_and_names_its_successor(client_for, personas, build,
                                                                                    media, settings):
    settings.DISK_IMAGE_IMAGE_BUILDER_IMAGE = IMAGE_BUILDER
    response = client_for(personas.developer).post("/disk-images/new/", request_data(
        build, types=["qcow2", "anaconda-iso"], builder_image=f"image-builder|{IMAGE_BUILDER}"))
    assert response.status_code == 200 and not DiskImage.objects.exists()
    assert "pick bootc-installer" in form_errors(response, "types")[0]
    page = response.content.decode()
    assert "deprecated" in page and "bootc-installer" in page


def test_a_builder_image_offered_for_one_tool_is_not_run_as_the_other(client_for, personas, build, media, settings):
    settings.DISK_IMAGE_IMAGE_BUILDER_IMAGE = IMAGE_BUILDER
    response = client_for(personas.developer).post("/disk-images/new/", request_data(
        build, builder_image=f"bib|{IMAGE_BUILDER}"))
    assert form_errors(response, "builder_image") and not DiskImage.objects.exists()
    with pytest.raises(ValidationError, match="is not offered by this portal"):
        diskimages.disk_image_request(user=personas.developer, types=["qcow2"], build=build, backend="bib",
                                      builder_image=IMAGE_BUILDER)


def test_another_teams_build_cannot_be_requested(client_for, personas, build):
    assert status_of(client_for, personas.outsider, "get", f"/disk-images/new/?build={build.pk}") == 404
    response = client_for(personas.outsider).post("/disk-images/new/", request_data(build))
    assert response.status_code == 200 and form_errors(response, "build") and not DiskImage.objects.exists()


def test_a_stage_source_takes_the_digest_the_stage_holds(client_for, personas, build):
    stage = personas.team.stages.get(name="test")
    response = client_for(personas.developer).post("/disk-images/new/", request_data(
        build, source="stage", definition=build.definition.pk, stage=stage.pk))
    assert "holds no image of web-os yet" in form_errors(response, "stage")[0]
    StageHistory.objects.create(stage=stage, definition=build.definition, digest=DIGEST, build=build)
    client_for(personas.developer).post("/disk-images/new/", request_data(
        build, source="stage", definition=build.definition.pk, stage=stage.pk))
    disk_image = DiskImage.objects.get()
    assert disk_image.stage == stage and disk_image.digest == DIGEST and disk_image.build == build


@pytest.mark.parametrize("stage", ["abc", "²", "99999999999999999999", "-1"])
def test_a_stage_link_with_a_bad_stage_id_opens_the_form_with_nothing_preselected(client_for, personas, build, stage):
    response = client_for(personas.developer).get(f"/disk-images/new/?definition={build.definition.pk}&stage={stage}")
    assert response.status_code == 200 and response.context["source_stage"] is None


def test_without_a_succeeded_build_the_form_says_what_to_do_first(client_for, personas, media):
    page = client_for(personas.developer).get("/disk-images/new/").content.decode()
    assert 'id="no-succeeded-build"' in page and "press Build" in page


def test_with_a_succeeded_build_the_form_does_not_say_so(client_for, personas, build):
    assert 'id="no-succeeded-build"' not in client_for(personas.developer).get("/disk-images/new/").content.decode()


def test_no_builder_of_the_architecture_fails_the_run_at_once_with_the_reason(personas, build):
    from builds.models import Builder

    Builder.objects.update(enabled=False)
    disk_image = diskimages.disk_image_request(user=personas.developer, build=build, types=["qcow2"])
    disk_image.run.refresh_from_db()
    assert disk_image.run.status == RunStatus.FAILED
    assert disk_image.run.exit_reason.startswith("No enabled builder for amd64")


# --- Presets ---------------------------------------------------------------------------------------------------------


def preset_post(**fields):
    data = {"name": "web tier", "description": "", "kernel_append": "", "kickstart": "", "other": "",
            "users-TOTAL_FORMS": "1", "users-INITIAL_FORMS": "0", "users-MIN_NUM_FORMS": "0",
            "users-MAX_NUM_FORMS": "50", "users-0-name": "", "users-0-key": "", "users-0-groups": "",
            "users-0-password": "", "fs-TOTAL_FORMS": "1", "fs-INITIAL_FORMS": "0", "fs-MIN_NUM_FORMS": "0",
            "fs-MAX_NUM_FORMS": "50", "fs-0-mountpoint": "", "fs-0-minsize": ""}
    data.update(fields)
    return data


def test_a_preset_is_saved_from_its_parts(client_for, personas):
    response = client_for(personas.developer).post("/disk-images/configurations/new/", preset_post(**{
        "users-0-name": "ops", "users-0-key": KEY, "users-0-groups": "wheel, adm",
        "users-0-password": "$6$rounds=5000$abc$def", "fs-0-mountpoint": "/", "fs-0-minsize": "20 GiB",
        "kernel_append": "console=ttyS0", "other": "[customizations]\nfips = true\n"}))
    preset = DiskImagePreset.objects.get()
    assert response.status_code == 302 and response.url == preset.get_absolute_url()
    assert preset.config == {"customizations": {
        "user": [{"name": "ops", "password": "$6$rounds=5000$abc$def", "key": KEY, "groups": ["wheel", "adm"]}],
        "filesystem": [{"mountpoint": "/", "minsize": "20 GiB"}], "kernel": {"append": "console=ttyS0"},
        "fips": True}}


@pytest.mark.parametrize("fields, where, message", [
    ({"users-0-name": "ops", "users-0-key": "ssh-rsa"}, ("users", "key"), "Not an OpenSSH public key"),
    ({"users-0-name": "ops", "users-0-password": "hunter2"}, ("users", "password"), "Give a hash, not the password"),
    ({"users-0-name": "ops", "users-0-password": "$6$x"}, ("users", "password"), "Not a valid crypt hash"),
    ({"users-0-name": "Ops!"}, ("users", "name"), "Lower-case letters"),
    ({"fs-0-mountpoint": "/", "fs-0-minsize": "20"}, ("fs", "minsize"), '"20" has no unit'),
    ({"fs-0-mountpoint": "/ostree", "fs-0-minsize": "2 GiB"}, ("fs", "mountpoint"), '"/ostree" is not allowed'),
    ({"other": "[customizations\n"}, ("form", "other"), "Not valid TOML"),
    ({"other": "[customizations.birds]\nname = 1\n"}, ("form", "other"), "customizations.birds: unknown key"),
    ({"kickstart": "ostreecontainer --url quay.io/x/y:1\n"}, ("form", "kickstart"), 'remove "ostreecontainer"'),
    ({"kickstart": 'text\nrootpw "abc\n'}, ("form", "kickstart"), "line 2: a quotation mark"),
    ({"kernel_append": "a\nb"}, ("form", "kernel_append"), ""),
])
def test_bad_preset_input_is_an_error_on_its_field(client_for, personas, fields, where, message):
    response = client_for(personas.developer).post("/disk-images/configurations/new/", preset_post(**fields))
    assert response.status_code == 200 and not DiskImagePreset.objects.exists()
    scope, field = where
    if scope == "form":
        errors = response.context["form"].errors.get(field, [])
    else:
        errors = (response.context["users"] if scope == "users" else response.context["filesystems"]).forms[0].errors \
            .get(field, [])
    assert errors and message in " ".join(errors), errors


ACCEPTED_CORPUS = [p for p in sorted(CORPUS.glob("bib-config-*")) if "INVALID" not in p.name
                   and p.suffix in (".toml", ".json") and "-13-" not in p.name]


@pytest.mark.parametrize("path", ACCEPTED_CORPUS, ids=lambda p: p.name)
def test_editing_a_preset_in_the_form_round_trips_every_key(client_for, personas, path):
    preset = presets.preset_import(team=personas.team, user=personas.developer, name=path.stem,
                                      text=path.read_text(), filename=path.name)
    client = client_for(personas.developer)
    page = client.get(preset.get_absolute_url())
    form, users, filesystems = page.context["form"], page.context["users"], page.context["filesystems"]
    data = {"name": preset.name, "description": "", "kernel_append": form.initial.get("kernel_append", ""),
            "kickstart": form.initial.get("kickstart", ""), "other": form.initial.get("other", "")}
    for prefix, formset in (("users", users), ("fs", filesystems)):
        data.update({f"{prefix}-TOTAL_FORMS": str(len(formset.forms)), f"{prefix}-INITIAL_FORMS": str(len(formset.initial or [])),
                     f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "50"})
        for i, f in enumerate(formset.forms):
            for name in f.fields:
                data[f"{prefix}-{i}-{name}"] = f.initial.get(name, "")
    before = preset.config
    response = client.post(preset.get_absolute_url(), data)
    assert response.status_code == 302, response.context["form"].errors
    preset.refresh_from_db()
    assert preset.config == before


def test_a_viewer_reads_a_preset_but_cannot_change_or_delete_it(client_for, personas, preset):
    client = client_for(personas.viewer)
    page = client.get(preset.get_absolute_url()).content.decode()
    assert "<fieldset disabled>" in page and "Save changes" not in page
    assert client.post(preset.get_absolute_url(), preset_post(name="x")).status_code == 403
    assert client.post(f"/disk-images/configurations/{preset.pk}/delete/").status_code == 403
    assert client_for(personas.outsider).get(preset.get_absolute_url()).status_code == 404
    assert DiskImagePreset.objects.get().name == "ops access"


def test_a_preset_exports_as_toml_and_json(client_for, personas, preset):
    client = client_for(personas.viewer)
    toml = client.get(f"/disk-images/configurations/{preset.pk}/export/?format=toml")
    assert toml["Content-Disposition"] == 'attachment; filename="config.toml"'
    assert f'key = "{KEY}"' in toml.content.decode()
    assert '"name": "ops"' in client.get(f"/disk-images/configurations/{preset.pk}/export/?format=json").content.decode()


def test_importing_a_corpus_file_through_the_page(client_for, personas):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client = client_for(personas.developer)
    path = CORPUS / "bib-config-16-disk-lvm.toml"
    response = client.post("/disk-images/configurations/import/", {
        "name": "lvm", "file": SimpleUploadedFile(path.name, path.read_bytes()), "format": ""})
    assert response.status_code == 302
    assert DiskImagePreset.objects.get(name="lvm").config["customizations"]["disk"]["partitions"][0]["type"] == "lvm"
    bad = CORPUS / "bib-config-26-INVALID-ostree-mountpoint.json"
    response = client.post("/disk-images/configurations/import/", {
        "name": "bad", "file": SimpleUploadedFile(bad.name, bad.read_bytes()), "format": ""})
    assert response.status_code == 200
    assert 'customizations.filesystem[2].mountpoint: "/ostree" is not allowed' in " ".join(
        response.context["form"].errors["file"])


def test_importing_a_configuration_whose_kickstart_has_an_unbalanced_quote_says_where(client_for, personas):
    from django.core.files.uploadedfile import SimpleUploadedFile

    text = b'[customizations.installer.kickstart]\ncontents = """\ntext\nrootpw "abc\n"""\n'
    response = client_for(personas.developer).post("/disk-images/configurations/import/", {
        "name": "quote", "file": SimpleUploadedFile("config.toml", text), "format": ""})
    assert response.status_code == 200 and not DiskImagePreset.objects.exists()
    assert ("customizations.installer.kickstart.contents: pykickstart: line 2: a quotation mark or backslash escape "
            "is not closed on this line") in " ".join(response.context["form"].errors["file"])


# --- Settings: retention and AWS credentials -------------------------------------------------------------------------


def test_an_admin_sets_retention_and_adds_aws_credentials_whose_secret_is_never_shown(client_for, personas):
    client = client_for(personas.admin)
    client.post("/teams/platform/disk-images/", {"form": "retention", "keep_days": "7", "keep_latest": "2"})
    policy = ArtifactRetention.objects.get(team=personas.team)
    assert (policy.keep_days, policy.keep_latest) == (7, 2)
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    response = client.post("/teams/platform/disk-images/", {"form": "credential", "name": "ec2",
                                                             "access_key_id": "AKIAIOSFODNN7EXAMPLE",
                                                             "secret_access_key": secret, "session_token": ""})
    assert response.status_code == 302
    credential = CloudCredential.objects.get()
    assert credential.secret_access_key == secret
    page = client.get("/teams/platform/disk-images/").content.decode()
    assert "…MPLE" in page and secret not in page and "AKIAIOSFODNN7EXAMPLE" not in page
    event = AuditEvent.objects.get(action="cloud_credential.save")
    assert secret not in event.canonical().decode()


@pytest.mark.parametrize("who, expected", [("developer", 403), ("viewer", 403), ("outsider", 404)])
def test_only_admins_change_the_settings(client_for, personas, who, expected):
    response = client_for(getattr(personas, who)).post("/teams/platform/disk-images/", {
        "form": "retention", "keep_days": "1", "keep_latest": "0"})
    assert response.status_code == expected
    assert not ArtifactRetention.objects.exists()


def test_bad_aws_keys_are_refused(client_for, personas):
    response = client_for(personas.admin).post("/teams/platform/disk-images/", {
        "form": "credential", "name": "ec2", "access_key_id": "not a key", "secret_access_key": "x"})
    assert "AWS access key ID" in response.context["credential_form"].errors["access_key_id"][0]


def test_retention_deletes_old_files_but_keeps_the_newest_conversions(personas, build, media,
                                                                     django_capture_on_commit_callbacks):
    conversions = [finished_conversion(build, personas.developer) for _ in range(4)]
    old = timezone.now() - timedelta(days=40)
    Artifact.objects.update(created_at=old)
    DiskImage.objects.filter(pk__in=[c.pk for c in conversions]).update(created_at=old)
    for i, conversion in enumerate(conversions):  # the last one is the newest
        DiskImage.objects.filter(pk=conversion.pk).update(created_at=old + timedelta(minutes=i))
    diskimages.retention_save(team=personas.team, user=personas.admin, keep_days=30, keep_latest=2)
    with django_capture_on_commit_callbacks(execute=True):
        assert diskimages.artifacts_expire() == 2
    kept = set(Artifact.objects.present().values_list("disk_image_id", flat=True))
    assert kept == {conversions[2].pk, conversions[3].pk}
    gone = Artifact.objects.filter(deleted_at__isnull=False)
    assert all(a.deleted_reason == "expired: older than 30 days (team retention policy)" for a in gone)
    assert not any(a.file.storage.exists(a.file.name) for a in gone)
    diskimages.retention_save(team=personas.team, user=personas.admin, keep_days=0, keep_latest=0)
    assert diskimages.artifacts_expire() == 0


# --- Kickstarts ------------------------------------------------------------------------------------------------------


def kickstart_post(source_build, **fields):
    build = source_build
    data = {"source": "stage", "definition": build.definition.pk, "stage": build.definition.team.stages.get(
        name="prod").pk, "build": "", "track": "", "transport": "registry", "username": "ops", "ssh_key": KEY,
        "password_hash": "", "groups": "wheel", "layout": "lvm", "filesystem": "xfs", "disk": "",
        "timezone": "Etc/UTC"}
    data.update(fields)
    return data


def test_an_operator_writes_a_kickstart_for_a_stage_and_downloads_it(client_for, personas, build):
    client = client_for(personas.operator)
    page = client.post("/kickstarts/new/", kickstart_post(build)).content.decode()
    assert f"ostreecontainer --url={build.definition.repository}:prod" in page
    response = client.post("/kickstarts/new/", kickstart_post(build, download="1"))
    assert response["Content-Disposition"] == 'attachment; filename="web-os-prod.ks"'
    text = response.content.decode()
    from builds.diskimages.kickstart import validate

    assert validate(text) == ([], [])
    assert f"--enforce-container-sigpolicy {build.definition.repository}:prod" in text
    assert AuditEvent.objects.filter(action="kickstart.generate").count() == 2


def test_a_kickstart_for_a_build_pins_its_digest_and_follows_the_chosen_stage(client_for, personas, build):
    test_stage = build.definition.team.stages.get(name="test")
    text = client_for(personas.developer).post("/kickstarts/new/", kickstart_post(
        build, source="build", build=build.pk, track=test_stage.pk, skip_signature_verification="on",
        download="1")).content.decode()
    assert f"ostreecontainer --url={build.image_ref} --no-signature-verification" in text
    assert f"--transport registry {build.definition.repository}:test" in text


@pytest.mark.parametrize("fields, field", [({"ssh_key": "not a key"}, "ssh_key"), ({"password_hash": "secret"},
                                           "password_hash"), ({"username": "root"}, "username"),
                                          ({"timezone": "Mars/Olympus"}, "timezone"), ({"disk": "sda;reboot"}, "disk")])
def test_bad_kickstart_input_is_an_error_on_its_field(client_for, personas, build, fields, field):
    response = client_for(personas.developer).post("/kickstarts/new/", kickstart_post(build, **fields))
    assert response.status_code == 200 and response.context["form"].errors.get(field)


def test_without_an_image_the_kickstart_form_says_what_to_do_first(client_for, personas, media):
    page = client_for(personas.operator).get("/kickstarts/new/").content.decode()
    assert 'id="no-definitions"' in page and "Images</a> page" in page


def test_with_an_image_the_kickstart_form_does_not_say_so(client_for, personas, build):
    assert 'id="no-definitions"' not in client_for(personas.operator).get("/kickstarts/new/").content.decode()


def test_a_viewer_may_not_write_kickstarts(client_for, personas, build):
    assert client_for(personas.viewer).post("/kickstarts/new/", kickstart_post(build)).status_code == 403
