"""Disk images in S3-compatible object storage (moto's S3 API server on loopback): the file and its checksum are objects
in the bucket; a download is the same access check, then a redirect to a presigned URL that serves the bytes, ranges
and resumes included; on disk behind the proxy it is an X-Accel-Redirect; a bad setting is named; an upload that fails
half-way leaves neither a row nor an object."""

import hashlib
import os
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from django.core.management import call_command

from builds.diskimages import services as diskimages
from builds.diskimages.models import Artifact
from builds.diskimages.pipeline import Conversion, Failed, TailSink
from builds.models import Builder
from builds.runner import Watch
from portal import objectstore
from portal.logsink import LogSink, lines_after
from portal.models import AuditEvent
from tests.diskimages.rows import finished_conversion, succeeded_build
from tests.portal.fixtures import point_settings_at, s3_storage_settings

pytestmark = pytest.mark.django_db


def fetch(url, headers=None, method="GET"):
    """A request straight to object storage, as the browser makes it after the redirect."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:  # nosec B310: a loopback test server
        return response.status, response.headers, response.read()


@pytest.fixture
def stored(personas, s3):
    build = succeeded_build(personas.team, personas.developer)
    artifact = finished_conversion(build, personas.developer, types=["qcow2"]).artifacts.get()
    with artifact.file.open("rb") as f:
        artifact.data = f.read()
    return artifact


def test_the_file_is_an_object_in_the_bucket(stored, s3):
    assert s3.keys() == [stored.file.name]
    assert hashlib.sha256(s3.read(stored.file.name)).hexdigest() == stored.sha256


def test_a_download_redirects_to_a_presigned_url_that_serves_the_file(client_for, personas, stored, s3):
    response = client_for(personas.viewer).get(stored.get_absolute_url())
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith(f"{s3.server.endpoint}/{s3.name}/{stored.file.name}?")
    assert "X-Amz-Signature=" in location and "X-Amz-Expires=3600" in location
    status, headers, data = fetch(location)
    assert status == 200 and data == stored.data
    assert headers["Content-Disposition"] == f"attachment; filename*=UTF-8''{stored.filename}"
    assert headers["Content-Type"] == "application/x-qemu-disk"
    event = AuditEvent.objects.get(action="artifact.download")
    assert event.actor == personas.viewer and event.detail["via"] == "presigned"


def test_an_interrupted_download_resumes_from_object_storage(client_for, personas, stored):
    client = client_for(personas.developer)
    first_url = client.get(stored.get_absolute_url(), HTTP_RANGE="bytes=0-999999")["Location"]
    status, headers, first = fetch(first_url, {"Range": "bytes=0-999999"})
    assert status == 206 and len(first) == 1_000_000
    # The client comes back for the rest: a fresh link, and object storage serves the range.
    rest_url = client.get(stored.get_absolute_url(), HTTP_RANGE=f"bytes={len(first)}-")["Location"]
    status, headers, rest = fetch(rest_url, {"Range": f"bytes={len(first)}-"})
    assert status == 206 and headers["Content-Range"] == f"bytes {len(first)}-{stored.size - 1}/{stored.size}"
    assert hashlib.sha256(first + rest).hexdigest() == stored.sha256
    assert AuditEvent.objects.filter(action="artifact.download").count() == 1  # the resumed range is not a new download


def test_head_and_a_range_past_the_end_are_answered_by_the_portal(client_for, personas, stored):
    client = client_for(personas.developer)
    head = client.head(stored.get_absolute_url())
    assert head.status_code == 200 and head["Content-Length"] == str(stored.size) and head["Accept-Ranges"] == "bytes"
    assert client.get(stored.get_absolute_url(), HTTP_RANGE=f"bytes={stored.size}-").status_code == 416


@pytest.mark.parametrize("who, outcome", [("anonymous", "login"), ("outsider", 404), ("helpdesk", 404),
                                          ("viewer", "object storage"), ("developer", "object storage")])
def test_presigned_downloads_are_access_checked(client_for, personas, stored, s3, who, outcome):
    user = None if who == "anonymous" else getattr(personas, who)
    response = client_for(user).get(stored.get_absolute_url())
    if outcome == "login":
        assert response.status_code == 302 and response["Location"].startswith("/login/")
    elif outcome == 404:
        assert response.status_code == 404
    else:
        assert response.status_code == 302 and response["Location"].startswith(s3.server.endpoint)


def test_a_link_lasts_s3_presign_seconds(client_for, personas, stored, settings):
    settings.S3_PRESIGN_SECONDS = 300
    location = client_for(personas.developer).get(stored.get_absolute_url())["Location"]
    assert "X-Amz-Expires=300&" in location or location.endswith("X-Amz-Expires=300")


def test_deleting_a_file_removes_its_object_and_checksum(client_for, personas, stored, s3,
                                                         django_capture_on_commit_callbacks):
    s3.server.client().put_object(Bucket=s3.name, Key=stored.checksum_name, Body=stored.checksum_text().encode())
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(personas.developer).post(f"{stored.get_absolute_url()}delete/")
    assert response.status_code == 302
    assert s3.keys() == []
    assert Artifact.objects.get(pk=stored.pk).deleted_at is not None


# --- The proxy serves local files ------------------------------------------------------------------------------------


def test_behind_the_proxy_a_download_is_handed_to_it_with_x_accel_redirect(client_for, personas, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.DOWNLOADS_VIA = "proxy"
    build = succeeded_build(personas.team, personas.developer)
    artifact = finished_conversion(build, personas.developer, types=["qcow2"]).artifacts.get()
    response = client_for(personas.viewer).get(artifact.get_absolute_url(), HTTP_RANGE="bytes=100-")
    assert response.status_code == 200 and response.content == b""
    assert response["X-Accel-Redirect"] == f"/protected-media/{artifact.file.name}"
    assert os.path.getsize(tmp_path / "media" / artifact.file.name) == artifact.size  # what the proxy will serve
    assert response["Content-Disposition"] == f'attachment; filename="{artifact.filename}"'
    assert response["X-Checksum-Sha256"] == artifact.sha256
    assert client_for(personas.outsider).get(artifact.get_absolute_url()).status_code == 404


# --- Storing: what a conversion's last step does ---------------------------------------------------------------------


class FailingAfter:
    """A builder's file that stops half-way, as an SFTP connection that drops would."""

    def __init__(self, size, fail_at):
        self.left, self.fail_at, self.read_so_far = size, fail_at, 0

    def read(self, n=-1):
        if self.read_so_far >= self.fail_at:
            raise OSError("Connection lost (the builder went away)")
        n = min(n if n and n > 0 else 1 << 20, self.left)
        self.read_so_far += n
        self.left -= n
        return os.urandom(n)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def conversion_storing(personas, *, runner=None):
    """The conversion's storing step on its own, for a file the builder made (a local builder unless `runner`)."""
    build = succeeded_build(personas.team, personas.developer)
    disk_image = diskimages.disk_image_request(user=personas.developer, build=build, types=["qcow2"])
    sink = LogSink(disk_image.run, publish=False)
    watch = Watch(run=None, sink=None, deadline=None)
    conversion = Conversion(disk_image, Builder(name="local", podman_root=""), runner or SimpleNamespace(), "/tmp",
                            watch, TailSink(sink), [])
    return conversion, disk_image, sink


def stored_file(tmp_path, name, size=64 * 1024):
    """(path, relative, size) of a file a builder made."""
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return str(path), f"qcow2/{name}", size


def test_a_conversion_stores_the_file_and_its_checksum_in_the_bucket(personas, s3, tmp_path):
    conversion, disk_image, sink = conversion_storing(personas)
    path = tmp_path / "disk.qcow2"
    path.write_bytes(os.urandom(9 * 1024 * 1024))  # over boto3's multipart threshold (8 MiB)
    artifact = conversion.store("vmdk", str(path), "vmdk/disk.vmdk", path.stat().st_size, {}, "")
    assert artifact.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert s3.keys() == sorted([artifact.file.name, f"{artifact.file.name}.sha256"])
    assert s3.read(f"{artifact.file.name}.sha256").decode() == f"{artifact.sha256}  {artifact.filename}\n"
    assert s3.read(artifact.file.name) == path.read_bytes()


def test_an_upload_that_fails_half_way_leaves_no_row_and_no_object(personas, s3):
    size = 24 * 1024 * 1024
    source = FailingAfter(size, fail_at=12 * 1024 * 1024)
    runner = SimpleNamespace(sftp=SimpleNamespace(open=lambda path, mode: source))
    conversion, disk_image, sink = conversion_storing(personas, runner=runner)
    with pytest.raises((Failed, OSError)):
        conversion.store("raw", "/builder/output/image/disk.raw", "image/disk.raw", size, {}, "")
    assert source.read_so_far >= 8 * 1024 * 1024  # a part had gone up
    assert not Artifact.objects.filter(disk_image=disk_image).exists()
    assert s3.keys() == [] and s3.multipart_uploads() == []


@pytest.mark.parametrize("wrong, named", [
    ({"secret_key": "not-the-secret"}, "S3_SECRET_ACCESS_KEY"),
    ({"access_key": "AKIAUNKNOWN000000000"}, "S3_ACCESS_KEY_ID"),
    ({"bucket": "no-such-bucket-here"}, "S3_BUCKET"),
    ({"endpoint": "http://127.0.0.1:9"}, "S3_ENDPOINT_URL"),
])
def test_a_wrong_storage_setting_fails_the_first_upload_naming_it(personas, s3_checking_keys, settings, tmp_path,
                                                                   wrong, named):
    conversion, disk_image, sink = conversion_storing(personas)
    s3 = s3_checking_keys
    conversion.store("qcow2", *stored_file(tmp_path, "right.qcow2"), {}, "")  # the right settings work
    point_settings_at(settings, s3_storage_settings(s3.server, s3.name, **wrong))
    with pytest.raises(Failed) as failed:
        conversion.store("qcow2", *stored_file(tmp_path, "disk.qcow2"), {}, "")
    assert named in str(failed.value)
    assert Artifact.objects.filter(disk_image=disk_image).count() == 1  # the first one only
    sink.close()
    assert lines_after(disk_image.run)  # the log says what it was storing
    with pytest.raises(objectstore.StorageUnavailable) as check:
        objectstore.check()
    assert named in str(check.value)


def test_storage_check_writes_reads_and_deletes_a_probe(s3, capsys):
    call_command("storage_check")
    assert f"s3 bucket {s3.name}" in capsys.readouterr().out
    assert s3.keys() == []
