"""A build's SBOM lives in object storage (moto's S3 API server on loopback), not in the database: written when the
build succeeds, downloaded the way disk images are (a presigned URL, the proxy's disk, or streamed under make run),
deleted when retention deletes the build's image and never before, and named in every backup so a restore checks it is
there. A bucket that refuses leaves no row pointing at a missing object. A download never writes: a build with no SBOM
stored gets the same document made from its package list, and `manage.py sbom_store_missing` stores those."""

import hashlib
import io
import json
import urllib.request

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from builds.cleanup import IMAGE_DELETED
from builds.models import Build
from builds.pipeline import BUILD_SUCCEEDED
from builds.supplychain import services
from builds.supplychain.models import BuildSbom
from builds.supplychain.sbom import sbom_json
from portal import backups, objectstore, registry
from portal.models import AuditEvent
from tests.diskimages.rows import succeeded_build
from tests.portal.fixtures import point_settings_at, s3_storage_settings

pytestmark = pytest.mark.django_db


@pytest.fixture
def build(personas):
    built = succeeded_build(personas.team, personas.developer)
    Build.objects.filter(pk=built.pk).update(package_format="rpm", packages={"bash": "5.2.26-4.el10",
                                                                             "openssl": "3.2.2-12.el10"})
    return Build.objects.with_related().get(pk=built.pk)


def sbom_url(build):
    return f"/builds/{build.pk}/sbom.cdx.json"


def fetch(url):
    with urllib.request.urlopen(url, timeout=30) as response:  # nosec B310: a loopback test server
        return response.status, response.headers, response.read()


def test_a_build_that_succeeds_has_its_sbom_written_to_the_bucket(build, s3):
    assert registry.announce(BUILD_SUCCEEDED, build_id=build.pk) >= 1
    stored = BuildSbom.objects.get(build=build)
    assert s3.keys() == [stored.file.name] and stored.file.name.endswith(f"build-{build.pk}.cdx.json")
    assert s3.read(stored.file.name) == sbom_json(build).encode()
    assert stored.size == len(sbom_json(build).encode())


def test_the_sbom_downloads_from_the_bucket_by_a_presigned_url(build, s3, client_for, personas):
    services.sbom_store(build=build)
    response = client_for(personas.viewer).get(sbom_url(build))
    assert response.status_code == 302
    assert response["Location"].startswith(f"{s3.server.endpoint}/{s3.name}/sboms/")
    status, headers, data = fetch(response["Location"])
    assert status == 200 and headers["Content-Type"] == "application/vnd.cyclonedx+json"
    assert headers["Content-Disposition"] == f"attachment; filename*=UTF-8''web-os-build-{build.number}.cdx.json"
    assert json.loads(data)["metadata"]["component"]["version"] == build.digest


def test_only_the_teams_people_get_the_link(build, s3, client_for, personas):
    services.sbom_store(build=build)
    assert "/login/" in client_for(None).get(sbom_url(build))["Location"]
    assert client_for(personas.outsider).get(sbom_url(build)).status_code == 404
    assert client_for(personas.viewer).get(sbom_url(build)).status_code == 302
    assert client_for(personas.developer).get(sbom_url(build)).status_code == 302


def test_an_sbom_that_is_not_stored_downloads_all_the_same_and_the_get_writes_nothing(build, client_for, personas,
                                                                                        settings, tmp_path):
    settings.MEDIA_ROOT, settings.DOWNLOADS_VIA = str(tmp_path / "media"), "stream"
    audited = AuditEvent.objects.count()
    for _ in range(2):
        response = client_for(personas.viewer).get(sbom_url(build))
        assert response.status_code == 200 and response["Content-Type"] == "application/vnd.cyclonedx+json"
        assert response.content == sbom_json(build).encode()
        assert response["Content-Disposition"] == f'attachment; filename="web-os-build-{build.number}.cdx.json"'
        assert response["X-Checksum-Sha256"] == hashlib.sha256(sbom_json(build).encode()).hexdigest()
    assert not BuildSbom.objects.exists() and not (tmp_path / "media").exists()
    assert AuditEvent.objects.count() == audited


def test_a_download_is_a_get_only(build, client_for, personas):
    assert client_for(personas.developer).post(sbom_url(build)).status_code == 405
    assert not BuildSbom.objects.exists()


def test_on_disk_behind_the_proxy_the_proxy_serves_it(build, client_for, personas, settings, tmp_path):
    settings.MEDIA_ROOT, settings.DOWNLOADS_VIA = str(tmp_path / "media"), "proxy"
    stored = services.sbom_store(build=build)
    response = client_for(personas.viewer).get(sbom_url(build))
    assert response.status_code == 200 and response.content == b""
    assert response["X-Accel-Redirect"] == f"{objectstore.PROXY_PREFIX}{stored.file.name}"


def test_the_missing_sboms_are_stored_by_an_explicit_command_and_only_those(build, s3, personas):
    already = succeeded_build(personas.team, personas.developer, name="web-os-stored")
    kept = services.sbom_store(build=Build.objects.with_related().get(pk=already.pk))
    gone = succeeded_build(personas.team, personas.developer, name="web-os-pruned")
    Build.objects.filter(pk=gone.pk).update(image_deleted_at=timezone.now())
    out = io.StringIO()
    call_command("sbom_store_missing", stdout=out)
    assert out.getvalue().strip() == "Stored 1 SBOM(s)."
    stored = BuildSbom.objects.get(build=build)
    assert s3.read(stored.file.name) == sbom_json(build).encode()
    assert BuildSbom.objects.get(build=already) == kept and not BuildSbom.objects.filter(build=gone).exists()
    call_command("sbom_store_missing", stdout=out)
    assert out.getvalue().strip().endswith("Stored 0 SBOM(s).") and BuildSbom.objects.count() == 2


def test_the_command_says_which_it_could_not_store_and_stores_no_row(build, s3, settings):
    point_settings_at(settings, s3_storage_settings(s3.server, "no-such-bucket"))
    err = io.StringIO()
    with pytest.raises(CommandError, match=r"1 SBOM\(s\) could not be stored"):
        call_command("sbom_store_missing", stdout=io.StringIO(), stderr=err)
    assert f"build {build.number}" in err.getvalue() and "S3_BUCKET" in err.getvalue()
    assert not BuildSbom.objects.exists()


def test_retention_deletes_the_sbom_with_the_image_and_never_before(build, s3, personas, client_for):
    stored = services.sbom_store(build=build)
    lines = []
    # Announced for the digest while the build's image is still there (it is not marked deleted): nothing goes.
    assert services.sboms_image_deleted(digest=build.digest, team=personas.team, log=lines.append) == 0
    assert s3.keys() == [stored.file.name]
    Build.objects.filter(pk=build.pk).update(image_deleted_at=timezone.now())
    assert services.sboms_image_deleted in registry._subscribers[IMAGE_DELETED]  # builds.cleanup announces it
    assert services.sboms_image_deleted(digest=build.digest, team=personas.team, log=lines.append) == 1
    assert s3.keys() == [] and not BuildSbom.objects.exists()
    assert any("1 SBOM(s)" in line for line in lines)
    response = client_for(personas.viewer).get(sbom_url(build))
    assert response.status_code == 404 and not BuildSbom.objects.exists()


def test_a_backup_names_the_sbom_and_a_restore_finds_it_or_says_it_is_missing(build, s3):
    stored = services.sbom_store(build=build)
    recorded = [f for read in registry.stored_file_readers() for f in read() if f.kind == "build SBOM"]
    assert [(f.storage, f.name, f.size) for f in recorded] == [("default", stored.file.name, stored.size)]
    as_in_manifest = {"kind": "build SBOM", "storage": "default", "name": stored.file.name, "size": stored.size}
    assert backups._exists(as_in_manifest)
    s3.server.client().delete_object(Bucket=s3.name, Key=stored.file.name)
    assert not backups._exists(as_in_manifest)


def test_a_bucket_that_is_not_there_is_named_and_leaves_no_row(build, s3, settings, client_for, personas):
    point_settings_at(settings, s3_storage_settings(s3.server, "no-such-bucket"))
    with pytest.raises(objectstore.StorageUnavailable, match="S3_BUCKET"):
        services.sbom_store(build=build)
    assert not BuildSbom.objects.exists()
    response = client_for(personas.viewer).get(sbom_url(build))  # made from the package list: storage is not asked
    assert response.status_code == 200 and response.content == sbom_json(build).encode()
    assert not BuildSbom.objects.exists()


def test_a_stored_sbom_whose_bucket_does_not_answer_is_a_503_that_names_it(build, s3, settings, client_for, personas):
    services.sbom_store(build=build)
    point_settings_at(settings, s3_storage_settings(s3.server, "no-such-bucket"))
    settings.DOWNLOADS_VIA = "stream"  # the web process reads the object itself (make run)
    response = client_for(personas.viewer).get(sbom_url(build))
    assert response.status_code == 503 and "S3_BUCKET" in response.content.decode()
    assert BuildSbom.objects.filter(build=build).count() == 1  # the row stays: the object is where it was written
