"""Downloading artifacts: the checksum, HTTP range requests (so multi-GB downloads resume), and access: the URL's key is
random and checked, so a file of another team is a 404 even with its key."""

import hashlib

import pytest

from builds.diskimages.models import Artifact
from portal.models import AuditEvent
from tests.diskimages.rows import finished_conversion, succeeded_build


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return settings.MEDIA_ROOT


@pytest.fixture
def artifact(personas, media):
    build = succeeded_build(personas.team, personas.developer)
    disk_image = finished_conversion(build, personas.developer, types=["qcow2"])
    artifact = disk_image.artifacts.get()
    with artifact.file.open("rb") as f:
        artifact.data = f.read()
    return artifact


def body(response):
    return b"".join(response.streaming_content)


def test_the_whole_file_comes_with_its_checksum(client_for, personas, artifact):
    response = client_for(personas.viewer).get(artifact.get_absolute_url())
    assert response.status_code == 200
    data = body(response)
    assert data == artifact.data and hashlib.sha256(data).hexdigest() == artifact.sha256
    assert response["Content-Length"] == str(artifact.size)
    assert response["Accept-Ranges"] == "bytes"
    assert response["ETag"] == f'"{artifact.sha256}"'
    assert response["X-Checksum-Sha256"] == artifact.sha256
    assert response["Content-Type"] == "application/x-qemu-disk"
    assert response["Content-Disposition"] == f'attachment; filename="{artifact.filename}"'


@pytest.mark.parametrize("header, start, end", [
    ("bytes=0-0", 0, 0),
    ("bytes=0-1023", 0, 1023),
    ("bytes=1048576-", 1048576, None),
    ("bytes=-500", None, None),
    ("bytes=100-99999999999", 100, None),
])
def test_a_range_request_gets_exactly_that_range(client_for, personas, artifact, header, start, end):
    size = artifact.size
    if header == "bytes=-500":
        start, end = size - 500, size - 1
    end = size - 1 if end is None else end
    response = client_for(personas.developer).get(artifact.get_absolute_url(), HTTP_RANGE=header)
    assert response.status_code == 206
    assert response["Content-Range"] == f"bytes {start}-{end}/{size}"
    assert response["Content-Length"] == str(end - start + 1)
    assert body(response) == artifact.data[start:end + 1]


def test_an_interrupted_download_resumes_and_the_pieces_make_the_file(client_for, personas, artifact):
    client = client_for(personas.developer)
    first = body(client.get(artifact.get_absolute_url(), HTTP_RANGE="bytes=0-999999"))
    rest = body(client.get(artifact.get_absolute_url(), HTTP_RANGE=f"bytes={len(first)}-",
                           HTTP_IF_RANGE=f'"{artifact.sha256}"'))
    assert hashlib.sha256(first + rest).hexdigest() == artifact.sha256


def test_a_range_past_the_end_is_416_with_the_size(client_for, personas, artifact):
    response = client_for(personas.developer).get(artifact.get_absolute_url(),
                                                  HTTP_RANGE=f"bytes={artifact.size}-")
    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{artifact.size}"


@pytest.mark.parametrize("header", ["bytes=0-10,20-30", "items=0-10", "bytes=abc", "bytes=10-5", "bytes=-"])
def test_a_range_it_does_not_serve_gets_the_whole_file(client_for, personas, artifact, header):
    response = client_for(personas.developer).get(artifact.get_absolute_url(), HTTP_RANGE=header)
    assert response.status_code == 200 and len(body(response)) == artifact.size


def test_if_range_with_another_version_gets_the_whole_file(client_for, personas, artifact):
    response = client_for(personas.developer).get(artifact.get_absolute_url(), HTTP_RANGE="bytes=10-20",
                                                  HTTP_IF_RANGE='"' + "0" * 64 + '"')
    assert response.status_code == 200 and len(body(response)) == artifact.size


def test_head_says_the_size_without_the_body(client_for, personas, artifact):
    response = client_for(personas.developer).head(artifact.get_absolute_url())
    assert response.status_code == 200
    assert response["Content-Length"] == str(artifact.size) and response.content == b""


def test_a_download_from_the_start_is_audited_a_resumed_range_is_not(client_for, personas, artifact):
    client = client_for(personas.developer)
    body(client.get(artifact.get_absolute_url()))
    body(client.get(artifact.get_absolute_url(), HTTP_RANGE="bytes=100-"))
    events = AuditEvent.objects.filter(action="artifact.download")
    assert events.count() == 1 and events.get().actor == personas.developer


def test_the_checksum_file_feeds_sha256sum(client_for, personas, artifact):
    response = client_for(personas.viewer).get(f"{artifact.get_absolute_url()}sha256/")
    assert response.content.decode() == f"{artifact.sha256}  {artifact.filename}\n"


@pytest.mark.parametrize("who, status", [("anonymous", 302), ("outsider", 404), ("helpdesk", 404), ("viewer", 200),
                                         ("superuser", 200)])
def test_download_urls_are_access_checked(client_for, personas, artifact, who, status):
    user = None if who == "anonymous" else getattr(personas, who)
    response = client_for(user).get(artifact.get_absolute_url())
    assert response.status_code == status


def test_keys_are_random_and_unknown_keys_are_404(client_for, personas, artifact, media):
    other = succeeded_build(personas.other_team, personas.outsider, name="other-os")
    theirs = finished_conversion(other, personas.outsider).artifacts.get()
    assert len(artifact.key) >= 32 and artifact.key != theirs.key
    assert artifact.get_absolute_url() == f"/disk-images/files/{artifact.key}/"  # nothing else in it, no id
    client = client_for(personas.developer)
    assert client.get(theirs.get_absolute_url()).status_code == 404
    almost = artifact.key[:-1] + ("y" if artifact.key.endswith("x") else "x")  # one character off, never the key itself
    assert client.get(f"/disk-images/files/{almost}/").status_code == 404
    assert client.get("/disk-images/files/1/").status_code == 404


def test_a_deleted_file_is_gone_but_its_record_stays(client_for, personas, artifact,
                                                     django_capture_on_commit_callbacks):
    client = client_for(personas.developer)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"{artifact.get_absolute_url()}delete/")
    assert response.status_code == 302
    artifact = Artifact.objects.get(pk=artifact.pk)
    assert artifact.deleted_at is not None and artifact.deleted_reason == "deleted by developer"
    assert not artifact.file.storage.exists(artifact.file.name)
    assert client.get(artifact.get_absolute_url()).status_code == 404
    assert artifact.sha256 and artifact.size


def test_only_post_deletes_and_a_viewer_may_not(client_for, personas, artifact):
    assert client_for(personas.developer).get(f"{artifact.get_absolute_url()}delete/").status_code == 405
    assert client_for(personas.viewer).post(f"{artifact.get_absolute_url()}delete/").status_code == 403
    assert client_for(personas.outsider).post(f"{artifact.get_absolute_url()}delete/").status_code == 404
    assert Artifact.objects.get(pk=artifact.pk).present
