"""Django settings for leek's own tests; the database comes from the environment.

LEEK_TEST_DB=sqlite (default), postgres or mariadb; LEEK_TEST_DB_NAME names the file or the
database, made afresh by tests/conftest.py for each run, so runs can share a machine.
"""

import importlib.util
import json
import os

SECRET_KEY = "leek-tests"
DEBUG = os.environ.get("LEEK_TEST_DEBUG") == "1"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.admin",
    "django.contrib.messages",
    "django.contrib.sessions",
    "leek",
    "tests",
    # Apps a test makes on disk (a task module to break and mend across reloads).
    *filter(None, os.environ.get("LEEK_TEST_EXTRA_APPS", "").split(",")),
]
ROOT_URLCONF = "tests.urls"
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

_KIND = os.environ.get("LEEK_TEST_DB", "sqlite")
# "none" keeps connections open for ever, as many production sites do.
_CONN_MAX_AGE = {"none": None, "": 0}.get(os.environ.get("LEEK_TEST_CONN_MAX_AGE", ""), 0)
_NAME = os.environ.get("LEEK_TEST_DB_NAME", "")
if _KIND == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _NAME or "leek_test",
            "USER": os.environ.get("LEEK_TEST_PGUSER", "postgres"),
            "HOST": os.environ.get("LEEK_TEST_PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("LEEK_TEST_PGPORT", "5432"),
            "CONN_MAX_AGE": _CONN_MAX_AGE,
        }
    }
elif _KIND == "mariadb":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": _NAME or "leek_test",
            "USER": os.environ.get("LEEK_TEST_MYUSER", "root"),
            "HOST": os.environ.get("LEEK_TEST_MYHOST", "127.0.0.1"),
            "PORT": os.environ.get("LEEK_TEST_MYPORT", "3306"),
            "CONN_MAX_AGE": _CONN_MAX_AGE,
            "OPTIONS": {"charset": "utf8mb4"},
            "TEST": {"CHARSET": "utf8mb4"},
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _NAME or os.path.join(os.path.dirname(__file__), "leek-test.sqlite3"),
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }

LEEK = {
    "bind": "127.0.0.1:" + os.environ.get("LEEK_TEST_PORT", "0"),
    "host": "127.0.0.1",
    "port": int(os.environ.get("LEEK_TEST_PORT", "1")),
    "sweep_interval": float(os.environ.get("LEEK_TEST_SWEEP_INTERVAL", "0.5")),
    "secret": os.environ.get("LEEK_TEST_SECRET", ""),
    "signing_key": os.environ.get("LEEK_TEST_SIGNING_KEY", ""),
    "signing_key_fallbacks": list(
        filter(None, os.environ.get("LEEK_TEST_SIGNING_FALLBACKS", "").split(","))
    ),
    "task_modules": list(filter(None, os.environ.get("LEEK_TEST_TASK_MODULES", "").split(","))),
    "heartbeat_interval": float(os.environ.get("LEEK_TEST_HEARTBEAT_INTERVAL", "5")),
    "server_lease": float(os.environ.get("LEEK_TEST_SERVER_LEASE", "60")),
    "retention": json.loads(os.environ.get("LEEK_TEST_RETENTION", "{}")),
    "serializer": os.environ.get("LEEK_TEST_SERIALIZER", "pickle"),
    # Periodic tasks, as JSON: {"name": {"task": "tests.dt_tasks.write_row", "every": 1}}.
    "schedules": json.loads(os.environ.get("LEEK_TEST_SCHEDULES", "{}")),
    "db_timeout": float(os.environ.get("LEEK_TEST_DB_TIMEOUT", "10")),
}

# Django Tasks through leek. On Django 5.2 the django-tasks backport (the test extra) stands in
# for django.tasks, and its app registers Django's tasks check.
TASKS = {
    "default": {
        "BACKEND": "leek.backend.LeekBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {"lost_retries": 0},
    }
}
if importlib.util.find_spec("django.tasks") is None and importlib.util.find_spec("django_tasks"):
    INSTALLED_APPS.append("django_tasks")
