from pathlib import Path

from django.core.management.base import CommandError

from portal import backups
from portal.management.base import DatabaseCommand


class Command(DatabaseCommand):
    help = ("Restore a backup made by `manage.py backup` into this portal's database, replacing what it holds. Stop "
            "web, workers and beat first. Refuses at once a backup whose encryption key is not configured. Appends the "
            "audit event 'restored from the backup at head #N' (docs/operations.md#backups).")

    def add_arguments(self, parser):
        parser.add_argument("backup", type=Path)
        parser.add_argument("--yes", action="store_true", help="do not ask before replacing the database")

    def handle(self, *args, backup, yes=False, **options):
        try:
            manifest = backups.read_manifest(backup)
            backups.check_vendor(manifest)
            backups.check_key(manifest)
        except backups.BackupError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Backup taken {manifest.taken_at} of {manifest.vendor} database {manifest.database}: audit "
                          f"head {manifest.head_text()}, encryption key {manifest.encryption_keys[0]}, "
                          f"{len(manifest.stored_files)} stored file(s).")
        if not yes and self._answer("This replaces everything in this portal's database. Type 'restore' to go on: ") \
                != "restore":
            raise CommandError("Not restored: nothing was changed (pass --yes to restore without asking).")
        try:
            restored = backups.restore(backup)
        except backups.BackupError as exc:
            raise CommandError(str(exc)) from None
        for stored in restored.missing_files:
            self.stderr.write(f"missing in storage {stored['storage']!r}: {stored['name']} ({stored['kind']})")
        self.stdout.write(self.style.SUCCESS(
            f"Restored. Audit event #{restored.event.seq}: {restored.event.summary}. Run `manage.py migrate` if this "
            "portal's code is newer than the backup, then `manage.py audit_verify`."))
        if restored.missing_files:
            raise CommandError(f"{len(restored.missing_files)} file(s) the database points at are not in storage "
                               "(listed above): restore them from the storage's own backup.")

    @staticmethod
    def _answer(question):
        try:
            return input(question).strip()
        except EOFError:  # no terminal (a script, CI): never a yes
            return ""
