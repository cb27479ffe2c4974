# Unique keys, concurrency and rate limits (leek.unique, leek.throttle).

from django.db import migrations, models

# MariaDB and MySQL skip a unique constraint with a condition: there the same index is built
# over the whole column, which means the same, since NULLs never collide.
FULL_INDEX = "leek_task_unique_hold_all"


def add_full_index(apps, schema_editor):
    if schema_editor.connection.features.supports_partial_indexes:
        return
    table = schema_editor.quote_name(apps.get_model("leek", "Task")._meta.db_table)
    schema_editor.execute(f"CREATE UNIQUE INDEX {FULL_INDEX} ON {table} (unique_hold)")


def drop_full_index(apps, schema_editor):
    if schema_editor.connection.features.supports_partial_indexes:
        return
    table = schema_editor.quote_name(apps.get_model("leek", "Task")._meta.db_table)
    schema_editor.execute(f"DROP INDEX {FULL_INDEX} ON {table}")


class Migration(migrations.Migration):
    dependencies = [
        ("leek", "0007_schedules"),
    ]

    operations = [
        migrations.CreateModel(
            name="TaskLimit",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("key", models.CharField(max_length=255, unique=True)),
                ("next_start_at", models.DateTimeField(blank=True, db_index=True, null=True)),
            ],
        ),
        migrations.AddField(
            model_name="task",
            name="limit_key",
            field=models.CharField(blank=True, max_length=255, null=True),
        ),
        migrations.AddField(
            model_name="task",
            name="max_concurrency",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="task",
            name="rate_interval",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="task",
            name="unique_key",
            field=models.CharField(blank=True, max_length=255, null=True),
        ),
        migrations.AddField(
            model_name="task",
            name="unique_until",
            field=models.CharField(
                choices=[("start", "Start"), ("end", "End")],
                db_default="start",
                default="start",
                max_length=5,
            ),
        ),
        migrations.AddField(
            model_name="task",
            name="unique_hold",
            field=models.GeneratedField(
                db_persist=True,
                expression=models.Case(
                    models.When(
                        models.Q(
                            ("status", "READY"),
                            models.Q(("status", "RUNNING"), ("unique_until", "end")),
                            _connector="OR",
                        ),
                        then=models.F("unique_key"),
                    ),
                    default=None,
                ),
                output_field=models.CharField(max_length=255, null=True),
            ),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("limit_key__isnull", False), ("status", "READY")),
                fields=["-priority", "id"],
                name="leek_task_limited_order_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("limit_key__isnull", False), ("status", "READY")),
                fields=["limit_key", "-priority", "id"],
                name="leek_task_limited_ready_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("limit_key__isnull", False), ("status", "RUNNING")),
                fields=["limit_key"],
                name="leek_task_limited_running_idx",
            ),
        ),
        migrations.AddConstraint(
            model_name="task",
            constraint=models.UniqueConstraint(
                condition=models.Q(("unique_hold__isnull", False)),
                fields=("unique_hold",),
                name="leek_task_unique_hold",
            ),
        ),
        migrations.RunPython(add_full_index, drop_full_index, atomic=False, elidable=False),
    ]
