import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('releases', '0001_initial'),
    ]

    operations = [
        migrations.AlterField(
            model_name='promotion',
            name='status',
            field=models.CharField(choices=[('pending', 'Waiting for approval'), ('approved', 'Approved, waiting to apply'), ('applying', 'Applying'), ('applied', 'Applied'), ('failed', 'Failed'), ('rejected', 'Rejected'), ('withdrawn', 'Withdrawn'), ('superseded', 'Superseded')], db_index=True, default='pending', max_length=16),
        ),
        migrations.AddField(
            model_name='promotion',
            name='superseded_by',
            field=models.ForeignKey(blank=True, help_text='The request for a newer build of the same stage that replaced this one.', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='supersedes', to='releases.promotion'),
        ),
    ]
