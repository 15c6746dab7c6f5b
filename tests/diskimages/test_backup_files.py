"""Disk images' files live in storage, outside the database: a backup records their names (not their bytes), and a
restore checks that each is still there, naming those that are gone, while the others download as before."""

import tarfile

import pytest
from django.core.files.storage import storages
from django.db import connection

from portal import backups
from portal.models import AuditEvent
from tests.diskimages.rows import finished_conversion, succeeded_build
from tests.portal.test_backup import manage

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]


def test_a_backup_records_the_artifacts_files_and_a_restore_names_those_gone(personas, client_for, redis_server,
                                                                              settings, tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("backed up with pg_dump: run on PostgreSQL (DATABASE_URL)")
    settings.MEDIA_ROOT = str(tmp_path / "media")
    build = succeeded_build(personas.team, personas.developer)
    disk_image = finished_conversion(build, personas.developer, types=["qcow2", "raw"])
    kept, lost = disk_image.artifacts.order_by("image_type")
    path = tmp_path / "portal.tar"

    backed_up = manage("backup", str(path), redis_url=redis_server.url, MEDIA_ROOT=settings.MEDIA_ROOT)
    assert backed_up.returncode == 0, backed_up.stderr
    assert "2 stored file(s) recorded (not copied)" in backed_up.stdout
    recorded = {(f["kind"], f["storage"], f["name"], f["size"]) for f in backups.read_manifest(path).stored_files}
    assert recorded == {("disk image artifact", "default", a.file.name, a.size) for a in (kept, lost)}
    with tarfile.open(path) as tar:
        assert sorted(tar.getnames()) == ["database.pgdump", "manifest.json"]

    storages["default"].delete(lost.file.name)
    restored = manage("restore", str(path), "--yes", redis_url=redis_server.url, MEDIA_ROOT=settings.MEDIA_ROOT)
    assert restored.returncode == 1
    assert f"missing in storage 'default': {lost.file.name} (disk image artifact)" in restored.stderr
    assert "1 file(s) the database points at are not in storage" in restored.stderr
    event = AuditEvent.objects.order_by("-seq").first()
    assert event.summary.endswith("; 1 stored file(s) missing")
    assert [f["name"] for f in event.detail["missing_files"]] == [lost.file.name]
    response = client_for(personas.viewer).get(kept.get_absolute_url())
    assert response.status_code == 200 and len(b"".join(response.streaming_content)) == kept.size
