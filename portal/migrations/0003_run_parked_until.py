from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("portal", "0002_audit_append_only")]

    operations = [
        migrations.AddField(
            model_name="run",
            name="parked_until",
            field=models.DateTimeField(
                blank=True, null=True,
                help_text="A running run that waits with no worker (a rollout waiting for its maintenance window) is "
                          "taken up again then (`portal.services.run_park`)."),
        ),
    ]
