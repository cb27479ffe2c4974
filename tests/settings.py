"""Django settings for leek's own tests; the database comes from the environment.

LEEK_TEST_DB=sqlite (default) or postgres; LEEK_TEST_DB_NAME names the file or the
database, made afresh by tests/conftest.py for each run, so runs can share a machine.
"""

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
    "heartbeat_interval": float(os.environ.get("LEEK_TEST_HEARTBEAT_INTERVAL", "5")),
    "server_lease": float(os.environ.get("LEEK_TEST_SERVER_LEASE", "60")),
    "retention": json.loads(os.environ.get("LEEK_TEST_RETENTION", "{}")),
}
