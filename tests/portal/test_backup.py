"""Backups that restore. The drill, on real PostgreSQL with the real commands an operator runs: back up while the
portal holds secrets, logs and an audited history, change more, drop the database, restore, and then the audit chain
verifies (against checkpoints taken after the backup too), secrets decrypt, logs read, and the restore is on record as
"restored from the backup at head #N". A backup restored with another encryption key is refused at once, naming both
keys' fingerprints, and changes nothing."""

import sqlite3
import subprocess
import sys
import tarfile
from contextlib import closing

import psycopg
import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.db import connection, connections

from portal import backups, crypto, services
from portal.logsink import LogSink, lines_after
from portal.models import AuditEvent, NotificationWebhook, RunKind, RunStatus, Team
from tests.helpers import ROOT
from tests.plugins.personas import make_team
from tests.plugins.processes import subprocess_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]


def manage(*args, redis_url, **env):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=subprocess_env(redis_url, **env),
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def drop_the_database():
    name = connection.settings_dict["NAME"]
    params = {k: v for k, v in {"host": connection.settings_dict["HOST"] or "127.0.0.1",
                                "port": connection.settings_dict["PORT"] or 5432,
                                "user": connection.settings_dict["USER"],
                                "password": connection.settings_dict["PASSWORD"] or None}.items() if v}
    for conn in connections.all():
        conn.close()
        if hasattr(conn, "close_pool"):
            conn.close_pool()
    with psycopg.connect(**params, dbname="postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        assert admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None


@pytest.fixture
def postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("the restore drill runs on PostgreSQL (DATABASE_URL); make run's SQLite has its own test below")


def a_portal_with_history(personas):
    NotificationWebhook.objects.create(team=personas.team, name="ci", url="https://ci.example.com/hook",
                                       secret="webhook-s3cret", events=["build.failed"])
    run = services.run_create(kind=RunKind.BUILD, title="nightly", team=personas.team)
    services.run_start(run)
    sink = LogSink(run)
    for n in range(1, 1201):
        sink.write(f"step {n}")
    sink.close()
    services.run_finish(run, status=RunStatus.SUCCEEDED, log_lines=1200)
    services.audit(action="test.before_backup", summary="the last event before the backup")
    services.audit_checkpoint()
    return run


@pytest.mark.replaces_the_database
def test_the_restore_drill_back_up_drop_restore_and_everything_reads(postgresql, personas, redis_server, tmp_path):
    run = a_portal_with_history(personas)
    head = AuditEvent.objects.order_by("-seq").first()
    path = tmp_path / "portal.tar"

    backed_up = manage("backup", str(path), redis_url=redis_server.url)
    assert backed_up.returncode == 0, backed_up.stderr
    assert f"audit head #{head.seq} ({head.hash[:12]})" in backed_up.stdout
    manifest = backups.read_manifest(path)
    assert manifest.encryption_keys == crypto.key_fingerprints() and manifest.vendor == "postgresql"
    assert manifest.audit_head == {"seq": head.seq, "hash": head.hash}
    with tarfile.open(path) as tar:
        assert sorted(tar.getnames()) == ["database.pgdump", "manifest.json"]
    assert path.stat().st_mode & 0o777 == 0o600

    # The portal goes on after the backup, and its chain is checkpointed beyond the backup's head.
    make_team("After the backup")
    services.audit_checkpoint()

    drop_the_database()
    restored = manage("restore", str(path), "--yes", redis_url=redis_server.url)
    assert restored.returncode == 0, restored.stdout + restored.stderr

    event = AuditEvent.objects.order_by("-seq").first()
    assert event.seq == head.seq + 1 and event.action == "portal.restore"
    assert event.summary.startswith(f"restored from the backup at head #{head.seq} ({head.hash[:12]}) taken ")
    verified = manage("audit_verify", redis_url=redis_server.url)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Audit chain intact" in verified.stdout
    assert NotificationWebhook.objects.get().secret == "webhook-s3cret"
    assert [text for _, text in lines_after(run)] == [f"step {n}" for n in range(1, 1201)]
    assert not Team.objects.filter(name="After the backup").exists()


@pytest.mark.replaces_the_database
def test_restore_asks_first_and_refuses_another_key_at_once_naming_both_keys(postgresql, personas, redis_server,
                                                                              tmp_path):
    """One backup for the restore's refusals (each a manage.py start-up and pg_dump fewer than a backup apiece): a
    script without --yes, then a portal with another key, change nothing; with the backup's key kept, it restores."""
    a_portal_with_history(personas)
    path = tmp_path / "portal.tar"
    assert manage("backup", str(path), redis_url=redis_server.url).returncode == 0
    make_team("Still here")

    refused = manage("restore", str(path), redis_url=redis_server.url)
    assert refused.returncode == 1 and "Not restored: nothing was changed (pass --yes" in refused.stderr
    assert Team.objects.filter(name="Still here").exists()

    other_key = Fernet.generate_key().decode()
    refused = manage("restore", str(path), "--yes", redis_url=redis_server.url, FIELD_ENCRYPTION_KEYS=other_key)
    assert refused.returncode == 1
    assert (f"This backup was taken with the encryption key {crypto.key_fingerprints()[0]}; this portal's "
            f"FIELD_ENCRYPTION_KEYS are {crypto.key_fingerprint(other_key)}.") in refused.stderr
    assert "Nothing was changed." in refused.stderr
    assert Team.objects.filter(name="Still here").exists()
    # With the backup's key kept after the new one, it restores.
    both = ",".join([other_key, *settings.FIELD_ENCRYPTION_KEYS])
    restored = manage("restore", str(path), "--yes", redis_url=redis_server.url, FIELD_ENCRYPTION_KEYS=both)
    assert restored.returncode == 0, restored.stderr
    assert not Team.objects.filter(name="Still here").exists()


def test_a_file_that_is_not_a_backup_is_refused_with_its_name(redis_server, tmp_path):
    path = tmp_path / "notes.tar"
    path.write_text("not a tar")
    refused = manage("restore", str(path), "--yes", redis_url=redis_server.url)
    assert refused.returncode == 1 and f"{path} is not a portal backup" in refused.stderr


@pytest.mark.slow
def test_make_runs_sqlite_is_backed_up_online_and_restored(tmp_path, redis_server):
    database = tmp_path / "portal.sqlite3"
    env = {"DATABASE_URL": f"sqlite:///{database}", "AUDIT_CHECKPOINT_PATH": str(tmp_path / "checkpoints.jsonl")}
    # Migrated and given an audited team in one process (each manage.py start imports the whole portal again).
    create = ("from django.core.management import call_command; call_command('migrate', '--noinput', verbosity=0); "
              "from portal import services; from portal.models import User; "
              "services.team_create(name='Kept', actor=User.objects.create(username='a', is_superuser=True))")
    created = manage("shell", "-c", create, redis_url=redis_server.url, **env)
    assert created.returncode == 0, created.stderr
    path = tmp_path / "portal.tar"
    backed_up = manage("backup", str(path), redis_url=redis_server.url, **env)
    assert backed_up.returncode == 0, backed_up.stderr
    assert backups.read_manifest(path).vendor == "sqlite"
    for leftover in tmp_path.glob("portal.sqlite3*"):
        leftover.unlink()
    restored = manage("restore", str(path), "--yes", redis_url=redis_server.url, **env)
    assert restored.returncode == 0, restored.stderr
    with closing(sqlite3.connect(database)) as restored_database:
        teams = [name for (name,) in restored_database.execute(f"SELECT name FROM {Team._meta.db_table}")]
        (summary,) = restored_database.execute(
            f"SELECT summary FROM {AuditEvent._meta.db_table} ORDER BY seq DESC LIMIT 1").fetchone()
    assert teams == ["Kept"] and summary.startswith("restored from the backup at head #")
    verified = manage("audit_verify", redis_url=redis_server.url, **env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
