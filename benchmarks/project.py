"""The throwaway Django project the benchmark runs on: settings, the `benchapp` app, its database.

Runs in the benchmark process. It writes the project into a temporary directory, creates the
PostgreSQL database when asked, and makes the benchmark process a client of the project
(`setup_django`); the `python -m django leek` servers import the same files (live_server.py).
"""

from __future__ import annotations

import os
import socket
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

from common import BenchError

REPO_ROOT = Path(__file__).resolve().parent.parent
SETTINGS_MODULE = "leek_bench_settings"


SETTINGS_TEMPLATE = """\
SECRET_KEY = "leek-bench-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["leek", "benchapp"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {{"default": {database}}}
LEEK = {{"bind": "127.0.0.1:{port}", "host": "127.0.0.1", "port": {port}}}
TASKS = {{"default": {{"BACKEND": "leek.backend.LeekBackend", "QUEUES": []}}}}
"""

MODELS_PY = '''\
"""The benchmark's one model."""

from django.db import models


class Row(models.Model):
    """A row written by `write_row`."""

    n = models.IntegerField()
'''

TASKS_PY = '''\
"""The benchmark's tasks."""

from leek import Leek

from benchapp.models import Row

leek = Leek()


@leek.task
def noop():
    """Do nothing."""


@leek.task
def write_row(n):
    """Write one row."""
    Row.objects.create(n=n)


try:
    from django.tasks import task
except ImportError:  # Django 5.2: the django-tasks backport
    from django_tasks import task


@task()
def dt_noop():
    """Do nothing, as a django.tasks task run by leek's backend."""
'''

MIGRATION_PY = """\
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Row",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("n", models.IntegerField()),
            ],
        ),
    ]
"""


def database_settings(db: str, root: Path, pg_name: str) -> dict[str, Any]:
    """Return the DATABASES["default"] entry for `db`."""
    if db == "postgres":
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": pg_name,
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": "5432",
            "CONN_MAX_AGE": None,
        }
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(root / "bench.sqlite3"),
        "CONN_MAX_AGE": None,
        "OPTIONS": {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }


def write_project(root: Path, database: dict[str, Any], port: int) -> None:
    """Write the settings module and the bench app into `root`."""
    settings = SETTINGS_TEMPLATE.format(database=repr(database), port=port)
    (root / f"{SETTINGS_MODULE}.py").write_text(settings)
    app = root / "benchapp"
    (app / "migrations").mkdir(parents=True)
    (app / "__init__.py").write_text("")
    (app / "models.py").write_text(MODELS_PY)
    (app / "tasks.py").write_text(TASKS_PY)
    (app / "migrations" / "__init__.py").write_text("")
    (app / "migrations" / "0001_initial.py").write_text(MIGRATION_PY)


def free_port() -> int:
    """Return a loopback port nobody listens on right now."""
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_admin(sql: str) -> None:
    """Run one statement on the `postgres` database, in autocommit."""
    import psycopg

    try:
        with psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(sql)
    except psycopg.OperationalError as exc:
        raise BenchError(f"PostgreSQL at 127.0.0.1:5432: {exc}") from exc


def setup_django(root: Path) -> None:
    """Make this process a client of the throwaway project, and migrate it."""
    sys.path.insert(0, str(root))
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(1, str(REPO_ROOT))  # the checkout, when leek is not installed
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
