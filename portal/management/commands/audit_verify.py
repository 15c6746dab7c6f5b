from django.core.management.base import BaseCommand, CommandError

from portal import audit_checkpoints
from portal.models import AuditEvent
from portal.services import audit_verify


class Command(BaseCommand):
    help = ("Check the audit trail's HMAC chain and hold it against the checkpoints kept outside the database; names the "
            "first event that was edited, deleted (also from the end) or reordered.")

    def handle(self, *args, **options):
        try:
            problem = audit_verify()
            last = audit_checkpoints.store().last()
        except audit_checkpoints.CheckpointError as exc:
            raise CommandError(str(exc)) from None
        if problem is not None:
            seq, message = problem
            raise CommandError(f"Audit chain broken at event #{seq}: {message}.")
        checkpoint = f"last checkpoint #{last.seq} taken {last.at}" if last else "no checkpoint taken yet"
        self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {AuditEvent.objects.count()} events; {checkpoint}."))
