from django.core.management.base import BaseCommand, CommandError

from portal.retention import retention_run


class Command(BaseCommand):
    help = ("Run one retention pass now (beat runs one every RETENTION_EVERY_HOURS): archive old run logs to object "
            "storage, thin old host snapshots, prune old webhook deliveries and login records. Recorded like any "
            "pass; the audit trail is never pruned.")

    def handle(self, *args, **options):
        record = retention_run(trigger="command")
        for entry in record.removed.values():
            self.stdout.write(f"{entry['label']}: {entry['count']:,}  {_rest(entry)}".rstrip())
        for name, error in record.errors.items():
            self.stderr.write(f"{name} failed: {error}")
        if record.errors:
            raise CommandError(f"Retention pass #{record.pk} failed in: {', '.join(record.errors)}.")
        self.stdout.write(f"Retention pass #{record.pk}: {record.status}.")


def _rest(entry):
    return " ".join(f"{key}={value:,}" if isinstance(value, int) else f"{key}={value}"
                    for key, value in entry.items() if key not in ("label", "count"))
