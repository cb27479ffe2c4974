# Indexes for the filters of the task list in the admin.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("leek", "0005_operating"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("status", "READY")),
                fields=["id"],
                name="leek_task_ready_id_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("status", "RUNNING")),
                fields=["id"],
                name="leek_task_running_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("status", "FAILED")),
                fields=["id"],
                name="leek_task_failed_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(fields=["pool", "id"], name="leek_task_pool_idx"),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(fields=["callable_path", "id"], name="leek_task_callable_idx"),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(fields=["enqueued_at"], name="leek_task_enqueued_idx"),
        ),
    ]
