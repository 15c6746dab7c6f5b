from django.core.management.base import CommandError

from portal.management.base import DatabaseCommand
from portal.services import audit_chain_report


class Command(DatabaseCommand):
    help = ("Check the audit trail's HMAC chain and hold it against the checkpoints kept outside the database; names the "
            "first event that was edited, deleted (also from the end) or reordered.")

    def handle(self, *args, **options):
        intact, text = audit_chain_report()
        if not intact:
            raise CommandError(text)
        self.stdout.write(self.style.SUCCESS(text))
