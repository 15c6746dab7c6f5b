from django.core.management.base import BaseCommand, CommandError

from portal.models import AuditEvent
from portal.services import audit_verify


class Command(BaseCommand):
    help = "Check the audit trail's hash chain; names the first event that was edited, deleted or reordered."

    def handle(self, *args, **options):
        problem = audit_verify()
        if problem is not None:
            seq, message = problem
            raise CommandError(f"Audit chain broken at event #{seq}: {message}.")
        self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {AuditEvent.objects.count()} events."))
