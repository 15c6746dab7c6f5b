"""Data that does not grow forever: a retention pass archives old finished runs' logs to object storage (and the viewer,
search and downloads read them there, saying "archived"), prunes old webhook deliveries and login records, records
what it removed, and never touches the audit trail."""

import gzip
import json
from datetime import timedelta

import pytest
from axes.models import AccessAttempt, AccessLog
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.utils import timezone

from portal import logarchive, logsink, registry, retention, services
from portal.models import (
    AuditEvent,
    DeliveryStatus,
    LogArchive,
    LogChunk,
    LogSection,
    NotificationWebhook,
    RetentionRun,
    RetentionStatus,
    RunKind,
    RunStatus,
    WebhookDelivery,
)
from tests.portal.fixtures import point_settings_at, s3_storage_settings

pytestmark = pytest.mark.django_db

LINES = [f"\x1b[32mstep {i}\x1b[0m: compiling module-{i} {'x' * (i % 50)}" for i in range(1, 3001)]
LINES[1000] = "::group::Pushing the image"
LINES[2000] = "a needle in the haystack"


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


def finished_run(team, user, *, days_ago, lines=LINES, status=RunStatus.SUCCEEDED, batch_lines=100):
    run = services.run_create(kind=RunKind.BUILD, title="build web-os", team=team, started_by=user)
    services.run_start(run)
    with logsink.LogSink(run, publish=False) as sink:
        sink.batch_lines = batch_lines  # many chunks, as a long build makes
        sink.batch_seconds = 3600  # and by lines only: a slow moment on a busy machine would flush one more
        for line in lines:
            sink.write(line)
    services.run_finish(run, status=status)
    run.__class__.objects.filter(pk=run.pk).update(finished_at=timezone.now() - timedelta(days=days_ago))
    return run.__class__.objects.get(pk=run.pk)


def everything_readable(run):
    """What the viewer, search and the download read of a run's log."""
    fresh = run.__class__.objects.get(pk=run.pk)  # no archive remembered on the object
    tail = logsink.lines_between(fresh, limit=250, from_end=True)
    middle = logsink.lines_between(fresh, after=1490, before=1530, limit=1000)
    return {"tail": tail, "middle": middle, "last": logsink.last_seq(fresh), "line": logsink.line(fresh, 2001),
            "search": logsink.search(fresh, "NEEDLE"), "search_all": logsink.search(fresh, "step")["count"],
            "raw": b"".join(logsink.raw(fresh)), "sections": list(logsink.sections(fresh).values_list("seq", "kind"))}


def test_an_old_finished_runs_log_moves_to_object_storage_and_reads_the_same(personas, media):
    run = finished_run(personas.team, personas.developer, days_ago=31)
    before = everything_readable(run)
    chunks = LogChunk.objects.filter(run=run).count()
    assert chunks == 30

    record = retention.retention_run()

    archive = LogArchive.objects.get(run=run)
    assert not LogChunk.objects.filter(run=run).exists()
    assert archive.lines == 3000 and archive.chunks == 30 and len(archive.index) == 30
    stored = media / archive.name
    assert stored.stat().st_size == archive.size < archive.text_bytes
    # The object is a gzip file: zcat (here gzip.decompress) reads it whole, one JSON line per former chunk.
    members = [json.loads(line) for line in gzip.decompress(stored.read_bytes()).splitlines()]
    assert "\n".join(m["text"] for m in members).split("\n") == LINES
    assert everything_readable(run) == before
    assert record.status == RetentionStatus.SUCCEEDED
    assert record.removed["logs"]["count"] == 1 and record.removed["logs"]["lines"] == 3000
    assert record.removed["logs"]["bytes_removed"] == archive.text_bytes


def test_recent_and_unfinished_runs_keep_their_logs_in_the_database(personas, media, settings):
    settings.LOG_ARCHIVE_AFTER_DAYS = 30
    recent = finished_run(personas.team, personas.developer, days_ago=29)
    running = services.run_create(kind=RunKind.BUILD, title="still going", team=personas.team)
    services.run_start(running)
    with logsink.LogSink(running, publish=False) as sink:
        sink.write("still writing")
    retention.retention_run()
    assert not LogArchive.objects.exists()
    assert LogChunk.objects.filter(run=recent).count() == 30 and LogChunk.objects.filter(run=running).exists()
    settings.LOG_ARCHIVE_AFTER_DAYS = 0  # never
    retention.retention_run(now=timezone.now() + timedelta(days=400))
    assert not LogArchive.objects.exists()


def test_the_run_page_says_archived_and_its_endpoints_still_answer(client_for, personas, media):
    run = finished_run(personas.team, personas.developer, days_ago=45)
    retention.retention_run()
    client = client_for(personas.viewer)
    page = client.get(run.get_absolute_url()).content.decode()
    assert 'id="log-archived"' in page and "archived" in page
    assert "step 3000" in page  # the tail is on the page
    lines = client.get(f"/runs/{run.pk}/log/lines/", {"after": 999, "limit": 3}).json()
    assert lines["archived"] is True and lines["first"] == 1000 and lines["last"] == 3000
    assert lines["lines"][1] == "::group::Pushing the image"
    found = client.get(f"/runs/{run.pk}/log/search/", {"q": "needle"}).json()
    assert found["count"] == 1 and found["seqs"] == [2001]
    assert client.get(f"/runs/{run.pk}/log/line/2001/").content == b"a needle in the haystack"
    raw = client.get(f"/runs/{run.pk}/log.txt", {"gzip": "1"})
    assert raw["X-Log-Archived"]
    assert gzip.decompress(b"".join(raw.streaming_content)).decode().split("\n")[:-1] == LINES
    polled = client.get(f"/runs/{run.pk}/log/", {"after": 2990}, HTTP_HX_REQUEST="true")
    assert polled.status_code == 286 and "step 3000" in polled.content.decode()


@pytest.mark.parametrize("who, status", [("anonymous", 302), ("outsider", 404), ("helpdesk", 404), ("viewer", 200),
                                         ("developer", 200)])
def test_an_archived_log_is_access_checked_like_any_other(client_for, personas, media, who, status):
    run = finished_run(personas.team, personas.developer, days_ago=45)
    retention.retention_run()
    client = client_for(None if who == "anonymous" else getattr(personas, who))
    for url in (run.get_absolute_url(), f"/runs/{run.pk}/log/lines/?after=0", f"/runs/{run.pk}/log/search/?q=step",
                f"/runs/{run.pk}/log.txt"):
        assert client.get(url).status_code == status, url


def test_in_s3_the_archive_is_an_object_and_reads_by_range(personas, s3):
    run = finished_run(personas.team, personas.developer, days_ago=31)
    before = everything_readable(run)
    retention.retention_run()
    archive = LogArchive.objects.get(run=run)
    assert s3.keys() == [archive.name]
    assert everything_readable(run) == before


def test_an_archive_that_cannot_be_uploaded_leaves_the_log_in_place_and_the_pass_says_why(personas, s3_checking_keys,
                                                                                         settings):
    s3 = s3_checking_keys
    run = finished_run(personas.team, personas.developer, days_ago=31)
    point_settings_at(settings, s3_storage_settings(s3.server, s3.name, secret_key="wrong"))
    record = retention.retention_run()
    assert record.status == RetentionStatus.FAILED
    assert "S3_SECRET_ACCESS_KEY" in record.errors["logs"] or "S3_ACCESS_KEY_ID" in record.errors["logs"]
    assert LogChunk.objects.filter(run=run).count() == 30 and not LogArchive.objects.exists()
    assert "host_snapshots" in record.removed and "webhook_deliveries" in record.removed  # the other steps ran
    event = AuditEvent.objects.get(action="retention.run")
    assert "failed: logs" in event.summary


# --- Webhook deliveries, login records, the pass itself --------------------------------------------------------------


def test_old_webhook_deliveries_that_ended_are_pruned(personas):
    hook = NotificationWebhook.objects.create(team=personas.team, name="ci", url="https://ci.example.com/hook",
                                              secret="s", events=["build.failed"])
    old = timezone.now() - timedelta(days=100)

    def delivery(n, status, created_at):
        return WebhookDelivery.objects.create(webhook=hook, event="build.failed", delivery_id=f"d-{n}", payload={},
                                              status=status, created_at=created_at)

    gone = [delivery(1, DeliveryStatus.DELIVERED, old), delivery(2, DeliveryStatus.FAILED, old)]
    kept = [delivery(3, DeliveryStatus.RETRYING, old), delivery(4, DeliveryStatus.DELIVERED, timezone.now())]
    record = retention.retention_run()
    assert set(WebhookDelivery.objects.values_list("pk", flat=True)) == {d.pk for d in kept}
    assert record.removed["webhook_deliveries"]["count"] == len(gone)


def test_old_login_records_and_expired_sessions_are_pruned(personas):
    old = timezone.now() - timedelta(days=91)
    for n, when in enumerate([old, timezone.now()]):
        attempt = AccessAttempt.objects.create(username=f"guess{n}", ip_address="192.0.2.1", user_agent="x",
                                               get_data="", post_data="", failures_since_start=1)
        AccessAttempt.objects.filter(pk=attempt.pk).update(attempt_time=when)
        login = AccessLog.objects.create(username="developer", ip_address="192.0.2.1", user_agent="x")
        AccessLog.objects.filter(pk=login.pk).update(attempt_time=when)
    expired = SessionStore()
    expired.create()
    Session.objects.filter(session_key=expired.session_key).update(expire_date=timezone.now() - timedelta(minutes=1))
    record = retention.retention_run()
    assert list(AccessAttempt.objects.values_list("username", flat=True)) == ["guess1"]
    assert AccessLog.objects.count() == 1
    assert not Session.objects.filter(session_key=expired.session_key).exists()
    removed = record.removed["login_records"]
    assert (removed["attempts"], removed["logins"], removed["expired_sessions"]) == (1, 1, 1)


def test_the_audit_trail_is_never_pruned(personas, media):
    services.audit(action="test.ancient", summary="long ago", actor=personas.admin)
    count = AuditEvent.objects.count()
    finished_run(personas.team, personas.developer, days_ago=400)
    retention.retention_run(now=timezone.now() + timedelta(days=3650))
    assert AuditEvent.objects.count() == count + 1  # the pass's own record, nothing removed
    assert AuditEvent.objects.filter(action="test.ancient").exists()
    assert services.audit_verify() is None  # the chain is whole


def test_each_pass_is_a_row_and_an_audit_event_saying_what_it_removed(personas, media):
    finished_run(personas.team, personas.developer, days_ago=31)
    record = retention.retention_run(trigger="command")
    assert RetentionRun.objects.get() == record and record.finished_at and record.trigger == "command"
    assert record.policy["LOG_ARCHIVE_AFTER_DAYS"] == 30 and record.policy["HOST_SNAPSHOT_KEEP_DAYS"] == 14
    assert set(record.removed) == {"logs", "host_snapshots", "webhook_deliveries", "events", "login_records", "images"}
    event = AuditEvent.objects.get(action="retention.run")
    assert event.summary.startswith("retention: 1 logs archived, 0 host snapshots thinned, 0 webhook deliveries removed")
    assert event.detail["removed"]["logs"] == 1


def test_beat_runs_a_pass_once_per_period(personas, settings):
    settings.RETENTION_EVERY_HOURS = 24
    now = timezone.now()
    assert retention.retention_due(now=now) is not None
    assert retention.retention_due(now=now + timedelta(hours=23)) is None
    assert retention.retention_due(now=now + timedelta(hours=24)) is not None
    assert RetentionRun.objects.count() == 2


def test_a_pass_while_another_runs_is_skipped(personas):
    RetentionRun.objects.create(status=RetentionStatus.RUNNING)
    record = retention.retention_run()
    assert record.status == RetentionStatus.SKIPPED and record.removed == {}


def test_the_command_prints_what_it_removed(personas, media, capsys):
    finished_run(personas.team, personas.developer, days_ago=31)
    call_command("retention_run")
    out = capsys.readouterr().out
    assert "logs archived: 1" in out and "lines=3,000" in out and "succeeded" in out


def test_sections_stay_in_the_database_for_the_outline(personas, media):
    run = finished_run(personas.team, personas.developer, days_ago=31)
    retention.retention_run()
    assert LogSection.objects.filter(run=run, seq=1001, kind="group").exists()
    fresh = run.__class__.objects.get(pk=run.pk)
    assert fresh.log_archived_at is not None and logarchive.archive_of(fresh).lines == 3000


def test_backups_record_archived_logs_among_the_stored_files(personas, media):
    run = finished_run(personas.team, personas.developer, days_ago=31)
    retention.retention_run()
    archive = LogArchive.objects.get(run=run)
    stored = [f for reader in registry.stored_file_readers() for f in reader()]
    assert [(f.storage, f.name, f.size) for f in stored if f.kind == "archived run log"] == [
        ("default", archive.name, archive.size)]
