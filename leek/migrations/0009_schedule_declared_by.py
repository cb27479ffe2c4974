# Schedules: which worker generation last wrote a declaration (leek.schedule_records).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("leek", "0008_limits"),
    ]

    operations = [
        migrations.AddField(
            model_name="schedule",
            name="declared_by",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
