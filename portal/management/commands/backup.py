from pathlib import Path

from django.core.management.base import CommandError

from portal import backups
from portal.management.base import DatabaseCommand


class Command(DatabaseCommand):
    help = ("Back up the database into one tar file: pg_dump of a consistent snapshot (PostgreSQL) or SQLite's online "
            "backup, with a manifest naming the encryption key's fingerprint, the audit chain's head and the files "
            "kept in storage (docs/operations.md#backups). The portal keeps running meanwhile.")

    def add_arguments(self, parser):
        parser.add_argument("output", nargs="?", type=Path,
                            help="the file to write (default: var/backups/portal-<UTC time>.tar)")

    def handle(self, *args, output=None, **options):
        path = output or backups.default_path()
        try:
            manifest = backups.backup(path)
        except backups.BackupError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(
            f"Backed up {manifest.vendor} database {manifest.database} to {path} "
            f"({path.stat().st_size:,} bytes): audit head {manifest.head_text()}, encryption key "
            f"{manifest.encryption_keys[0] if manifest.encryption_keys else '-'}, "
            f"{len(manifest.stored_files)} stored file(s) recorded (not copied)."))
