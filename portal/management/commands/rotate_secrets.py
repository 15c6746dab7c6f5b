from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import transaction

from portal.crypto import EncryptedTextField


class Command(BaseCommand):
    help = "Re-encrypt every stored secret with the newest key in FIELD_ENCRYPTION_KEYS (run after adding a key in front)."

    def handle(self, *args, **options):
        total = 0
        for model in apps.get_models():
            fields = [f.name for f in model._meta.get_fields() if isinstance(f, EncryptedTextField)]
            if not fields:
                continue
            with transaction.atomic():
                for obj in model._base_manager.select_for_update().only("pk", *fields):
                    # Reading decrypts with any key; saving encrypts with the first.
                    model._base_manager.filter(pk=obj.pk).update(**{name: getattr(obj, name) for name in fields})
                    total += 1
            self.stdout.write(f"{model._meta.label}: {', '.join(fields)}")
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted {total} rows."))
