# Periodic tasks: the schedules, and one row per slot a server took.

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("leek", "0006_admin_indexes"),
    ]

    operations = [
        migrations.CreateModel(
            name="Schedule",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=200, unique=True)),
                (
                    "source",
                    models.CharField(
                        choices=[("code", "Code"), ("settings", "Settings")], max_length=8
                    ),
                ),
                ("callable_path", models.CharField(max_length=255)),
                (
                    "cron",
                    models.CharField(
                        blank=True, help_text="Crontab, in TIME_ZONE.", max_length=120
                    ),
                ),
                (
                    "every",
                    models.FloatField(blank=True, help_text="Seconds between slots.", null=True),
                ),
                ("args", models.JSONField(blank=True, default=list)),
                ("kwargs", models.JSONField(blank=True, default=dict)),
                ("pool", models.CharField(default="default", max_length=100)),
                ("priority", models.IntegerField(default=0)),
                ("timeout", models.FloatField(blank=True, null=True)),
                ("retries", models.PositiveIntegerField(default=0)),
                ("retry_backoff", models.FloatField(default=1.0)),
                ("lost_retries", models.PositiveIntegerField(default=0)),
                (
                    "catch_up",
                    models.BooleanField(
                        default=False,
                        help_text="Run the latest missed slot once when a server is back.",
                    ),
                ),
                (
                    "overlap",
                    models.BooleanField(
                        default=True,
                        help_text="Run a slot even while the previous run is not finished.",
                    ),
                ),
                ("declared", models.BooleanField(default=True)),
                ("recorded_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("enabled", models.BooleanField(default=True)),
                ("changed_by", models.CharField(blank=True, max_length=150)),
                ("changed_at", models.DateTimeField(blank=True, null=True)),
                ("since", models.DateTimeField(default=django.utils.timezone.now)),
                ("last_slot", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "ordering": ["name"],
            },
        ),
        migrations.CreateModel(
            name="ScheduleRun",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("slot", models.DateTimeField()),
                ("task_id", models.BigIntegerField(blank=True, null=True)),
                (
                    "skipped",
                    models.CharField(
                        blank=True,
                        choices=[("missed", "Missed"), ("overlap", "Overlap")],
                        max_length=8,
                    ),
                ),
                ("server", models.CharField(blank=True, max_length=300)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "schedule",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="runs",
                        to="leek.schedule",
                    ),
                ),
            ],
            options={
                "ordering": ["-slot"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("schedule", "slot"), name="leek_schedule_slot_once"
                    )
                ],
            },
        ),
    ]
