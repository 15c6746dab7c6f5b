from django.core.management.base import BaseCommand, CommandError

from portal.services import SecretsRotateError, secrets_rotate


class Command(BaseCommand):
    help = ("Re-encrypt every stored secret with the newest key in FIELD_ENCRYPTION_KEYS (run after adding a key in "
            "front), in one transaction: if one secret cannot be read, nothing is changed.")

    def handle(self, *args, **options):
        try:
            counts = secrets_rotate()
        except SecretsRotateError as exc:
            raise CommandError(f"{exc}. Nothing was changed.") from None
        for label, count in sorted(counts.items()):
            self.stdout.write(f"{label}: {count} row(s)")
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted {sum(counts.values())} rows."))
