from django.core.management.base import BaseCommand, CommandError

from portal.services import audit_chain_report


class Command(BaseCommand):
    # Django's system checks are the web's (they import every URL and the API's schemas, a third of the start-up): an
    # operator's command on the database runs without them, also when the web's configuration is what is broken.
    requires_system_checks = []
    help = ("Check the audit trail's HMAC chain and hold it against the checkpoints kept outside the database; names the "
            "first event that was edited, deleted (also from the end) or reordered.")

    def handle(self, *args, **options):
        intact, text = audit_chain_report()
        if not intact:
            raise CommandError(text)
        self.stdout.write(self.style.SUCCESS(text))
