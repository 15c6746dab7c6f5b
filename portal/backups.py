"""Backups that restore: `manage.py backup` and `manage.py restore` (docs/operations.md#backups).

A backup is one tar file holding the database and a manifest:

- PostgreSQL: `pg_dump --format=custom` of a snapshot exported by a REPEATABLE READ transaction, in which the manifest's
  facts are read too, so the dump, the audit chain's head and the list of stored files agree exactly while the portal
  keeps working;
- SQLite (`make run`): a copy made with SQLite's online backup API, which is consistent while web and workers write;
- `manifest.json`: when, from which database, the fingerprints of FIELD_ENCRYPTION_KEYS (never the keys), the head of
  the audit chain (its number and hash) and the files that rows point at in storage (`portal.registry.stored_files`:
  disk images' artifacts), which are not in the dump.

A restore first compares the backup's encryption key with this portal's and refuses at once, naming both fingerprints,
when the key that encrypted the backup's secrets is not configured (every stored secret would be unreadable). It then
loads the database (PostgreSQL: into the existing database with `pg_restore --clean --single-transaction`, or into a
new one created for it), checks that every recorded file is still in its storage, and appends the audit event
"restored from the backup at head #N", then a checkpoint, so `audit_verify` knows the chain was restored, not cut.

pg_dump, pg_restore and psql are the outside tools here; their argument lists are built in this module only.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from django.conf import settings
from django.core.files.storage import storages
from django.db import connection, connections, transaction
from django.utils import timezone

from . import crypto, registry, services
from .models import AuditEvent

FORMAT = 1
MANIFEST = "manifest.json"
POSTGRES_DUMP = "database.pgdump"
SQLITE_COPY = "database.sqlite3"
TOOL_TIMEOUT = 6 * 3600


class BackupError(Exception):
    """A backup cannot be taken or restored; the message says why and what to do."""


@dataclass
class Manifest:
    format: int
    taken_at: str
    vendor: str
    database: str
    encryption_keys: list[str]
    audit_head: dict | None
    stored_files: list[dict] = field(default_factory=list)
    database_file: str = ""

    def head_text(self) -> str:
        if not self.audit_head:
            return "#0 (an empty audit trail)"
        return f"#{self.audit_head['seq']} ({self.audit_head['hash'][:12]})"


# --- Taking a backup -------------------------------------------------------------------------------------------------


def default_path() -> Path:
    return Path(settings.VAR_DIR) / "backups" / f"portal-{timezone.now():%Y%m%dT%H%M%SZ}.tar"


def backup(path: Path) -> Manifest:
    """Write a backup of the database to `path` (a tar file, written next to it and renamed when complete)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="portal-backup-", dir=path.parent) as work:
        work = Path(work)
        if connection.vendor == "postgresql":
            manifest = _dump_postgresql(work / POSTGRES_DUMP)
        else:
            manifest = _copy_sqlite(work / SQLITE_COPY)
        (work / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
        partial = path.with_name(path.name + ".partial")
        with tarfile.open(partial, "w") as tar:
            tar.add(work / MANIFEST, arcname=MANIFEST)
            tar.add(work / manifest.database_file, arcname=manifest.database_file)
        partial.chmod(0o600)
        partial.replace(path)
    return manifest


def _facts(vendor: str, database_file: str) -> Manifest:
    """What the manifest says about the database as the caller's transaction sees it."""
    head = AuditEvent.objects.order_by("-seq").values("seq", "hash").first()
    files = [asdict(stored) for read in registry.stored_file_readers() for stored in read()]
    return Manifest(format=FORMAT, taken_at=timezone.now().isoformat(), vendor=vendor,
                    database=str(connection.settings_dict["NAME"]), encryption_keys=crypto.key_fingerprints(),
                    audit_head=dict(head) if head else None, stored_files=files, database_file=database_file)


def _dump_postgresql(out: Path) -> Manifest:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cursor.execute("SELECT pg_export_snapshot()")
        [snapshot] = cursor.fetchone()
        manifest = _facts("postgresql", out.name)
        # The snapshot lives as long as this transaction: pg_dump must run inside it.
        _run([*pg_dump_args(), f"--snapshot={snapshot}", f"--file={out}"], what="pg_dump")
    return manifest


def _copy_sqlite(out: Path) -> Manifest:
    """SQLite's online backup API, in one step: a consistent copy while web and workers keep writing. The audit head
    is read from the copy itself; the stored files from the live database just before (make run's database: a file
    converted meanwhile may be left out)."""
    manifest = _facts("sqlite", out.name)
    source = sqlite3.connect(settings.DATABASES["default"]["NAME"])
    target = sqlite3.connect(out)
    try:
        source.backup(target)
        row = target.execute("SELECT seq, hash FROM portal_auditevent ORDER BY seq DESC LIMIT 1").fetchone()
    finally:
        target.close()
        source.close()
    manifest.audit_head = {"seq": row[0], "hash": row[1]} if row else None
    return manifest


# --- Restoring one ---------------------------------------------------------------------------------------------------


def read_manifest(path: Path) -> Manifest:
    try:
        with tarfile.open(path) as tar:
            data = json.loads(tar.extractfile(MANIFEST).read())
    except (OSError, tarfile.TarError, KeyError, AttributeError, ValueError) as exc:
        raise BackupError(f"{path} is not a portal backup ({type(exc).__name__}: {exc}).") from None
    if data.get("format") != FORMAT:
        raise BackupError(f"{path} is a backup of format {data.get('format')!r}; this portal reads format {FORMAT}.")
    return Manifest(**data)


def check_key(manifest: Manifest) -> None:
    """Refuse a backup whose secrets the configured keys cannot decrypt, naming both fingerprints."""
    ours = crypto.key_fingerprints()
    theirs = manifest.encryption_keys[0] if manifest.encryption_keys else None
    if theirs is not None and theirs not in ours:
        raise BackupError(
            f"This backup was taken with the encryption key {theirs}; this portal's FIELD_ENCRYPTION_KEYS are "
            f"{', '.join(ours)}. Its stored secrets (registry logins, SSH keys, webhook secrets) would not decrypt. "
            f"Put the key with fingerprint {theirs} into FIELD_ENCRYPTION_KEYS (it may follow the current one) and "
            "run the restore again. Nothing was changed.")


def check_vendor(manifest: Manifest) -> None:
    if manifest.vendor != connection.vendor:
        raise BackupError(f"This is a {manifest.vendor} backup; this portal's database is {connection.vendor} "
                          "(DATABASE_URL). Nothing was changed.")


@dataclass
class Restored:
    manifest: Manifest
    missing_files: list[dict]
    event: AuditEvent


def restore(path: Path) -> Restored:
    """Load the backup at `path` into this portal's database (checked first: see the module's docstring)."""
    manifest = read_manifest(path)
    check_vendor(manifest)
    check_key(manifest)
    with tempfile.TemporaryDirectory(prefix="portal-restore-") as work:
        with tarfile.open(path) as tar:
            member = tar.getmember(manifest.database_file)
            if not member.isfile():
                raise BackupError(f"{path}: {manifest.database_file} is not a file.")
            tar.extract(member, work, filter="data")
        database_file = Path(work) / manifest.database_file
        _close_connections()
        if manifest.vendor == "postgresql":
            _restore_postgresql(database_file)
        else:
            _restore_sqlite(database_file)
    missing = [stored for stored in manifest.stored_files if not _exists(stored)]
    with transaction.atomic():
        event = services.audit(
            action=services.RESTORE_ACTION,
            summary=f"restored from the backup at head {manifest.head_text()} taken {manifest.taken_at}"
                    + (f"; {len(missing)} stored file(s) missing" if missing else ""),
            actor_name="manage.py restore",
            detail={"backup": Path(path).name, "taken_at": manifest.taken_at, "head": manifest.audit_head,
                    "encryption_key": manifest.encryption_keys[:1], "stored_files": len(manifest.stored_files),
                    "missing_files": missing[:100]},
        )
    services.audit_checkpoint()
    return Restored(manifest=manifest, missing_files=missing, event=event)


def _close_connections() -> None:
    """Give back every connection (and the pool's), so that the database can be replaced under this process."""
    for conn in connections.all():
        conn.close()
        if hasattr(conn, "close_pool"):
            conn.close_pool()


def _restore_postgresql(dump: Path) -> None:
    params = connection.settings_dict
    name = params["NAME"]
    if not _database_exists(name):
        with psycopg.connect(**_maintenance_params(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')  # noqa: S608 - the configured database name, quoted
    _run([*pg_restore_args(), "--clean", "--if-exists", "--single-transaction", "--exit-on-error", "--no-owner",
          f"--dbname={name}", str(dump)], what="pg_restore")


def _database_exists(name: str) -> bool:
    with psycopg.connect(**_maintenance_params(), autocommit=True) as admin:
        return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def _maintenance_params() -> dict:
    params = connection.settings_dict
    return {key: value for key, value in {
        "host": params.get("HOST") or None, "port": params.get("PORT") or None, "user": params.get("USER") or None,
        "password": params.get("PASSWORD") or None, "dbname": "postgres"}.items() if value is not None}


def _restore_sqlite(copy: Path) -> None:
    target_path = settings.DATABASES["default"]["NAME"]
    source = sqlite3.connect(copy)
    target = sqlite3.connect(target_path)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def _exists(stored: dict) -> bool:
    try:
        return storages[stored["storage"]].exists(stored["name"])
    except Exception:  # noqa: BLE001 - a storage that cannot be asked counts its files as missing, with the rest
        return False


# --- The outside tools -----------------------------------------------------------------------------------------------


def _libpq_env() -> dict[str, str]:
    """The connection of DATABASE_URL for libpq's tools, the password in the environment (never on the command line)."""
    params = connection.settings_dict
    env = {**os.environ}
    for variable, key in (("PGHOST", "HOST"), ("PGPORT", "PORT"), ("PGUSER", "USER"), ("PGPASSWORD", "PASSWORD")):
        if params.get(key):
            env[variable] = str(params[key])
    return env


def pg_dump_args() -> list[str]:
    return [_tool("pg_dump"), "--format=custom", "--no-owner", f"--dbname={connection.settings_dict['NAME']}"]


def pg_restore_args() -> list[str]:
    return [_tool("pg_restore")]


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not installed: install PostgreSQL's client tools of the server's major version "
                          "or newer (Debian: apt-get install postgresql-client).")
    return found


def _run(args: list[str], *, what: str) -> None:
    result = subprocess.run(args, env=_libpq_env(), capture_output=True, text=True, timeout=TOOL_TIMEOUT)  # noqa: S603
    if result.returncode != 0:
        raise BackupError(f"{what} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")
