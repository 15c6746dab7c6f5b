"""Webhooks subscribed to "promotion.decided" now get its two halves, promotion.approved and promotion.rejected."""

from django.db import migrations

OLD = "promotion.decided"
NEW = ["promotion.approved", "promotion.rejected"]


def split(apps, schema_editor):
    webhook = apps.get_model("portal", "NotificationWebhook")
    for hook in webhook.objects.all():
        if OLD in hook.events:
            hook.events = [e for e in hook.events if e != OLD] + [e for e in NEW if e not in hook.events]
            hook.save(update_fields=["events"])


def join(apps, schema_editor):
    webhook = apps.get_model("portal", "NotificationWebhook")
    for hook in webhook.objects.all():
        if any(e in hook.events for e in NEW):
            hook.events = [e for e in hook.events if e not in NEW] + [OLD]
            hook.save(update_fields=["events"])


class Migration(migrations.Migration):
    dependencies = [
        ("releases", "0003_stage_require_boot_test"),
        ("portal", "0007_events"),
    ]

    operations = [migrations.RunPython(split, join)]
