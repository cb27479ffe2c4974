"""Django system checks (`manage.py check`) for leek's settings, its database and its backend.

Run in any process that runs Django's checks; `manage.py leek` refuses to start on an error.
The Django Tasks backend's checks run through `LeekBackend.check()` (Django's tasks check),
so they run even when leek is missing from INSTALLED_APPS.
"""

from __future__ import annotations

import os
from typing import Any

from django.apps import apps
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, router

from leek import conf

# SQLite's file header holds 2 at these offsets when the file is in WAL mode.
_WAL_HEADER = (18, b"\x02\x02")
# A writer waits this long for another process's lock before "database is locked".
MIN_SQLITE_TIMEOUT = 5


@checks.register("leek")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Check that `settings.LEEK` parses and that a network-facing server has a secret."""
    try:
        settings = conf.get()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="leek.E001")]
    if not settings.bind_is_loopback and not settings.secret:
        return [
            checks.Error(
                f"LEEK['bind'] = {settings.bind!r} is reachable from other machines, but "
                "LEEK['secret'] is not set.",
                hint="Set LEEK['secret'] to a long random string (the same in every process), "
                "or bind to 127.0.0.1.",
                id="leek.E002",
            )
        ]
    return []


@checks.register("leek")
def check_database(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Check that the task table's database can take writes from several processes."""
    from leek.models import Task

    try:
        eager = conf.get().eager
    except ImproperlyConfigured:
        return []  # check_settings reports it
    alias = router.db_for_write(Task)
    connection = connections[alias]
    if connection.vendor != "sqlite" or eager:
        return []
    return _check_sqlite(alias, connection.settings_dict)


def _check_sqlite(alias: str, db: dict[str, Any]) -> list[checks.CheckMessage]:
    name = str(db.get("NAME") or "")
    options = db.get("OPTIONS") or {}
    where = f"DATABASES[{alias!r}]"
    if not name or name == ":memory:" or "mode=memory" in name:
        return [
            checks.Error(
                f"{where} is an in-memory SQLite database, which the leek server's workers "
                "cannot see.",
                hint="Use a file for NAME, or set LEEK['eager'] = True to run tasks in-process.",
                id="leek.E003",
            )
        ]
    found = []
    init = str(options.get("init_command", "")).lower().replace(" ", "")
    if "journal_mode=wal" not in init and not _file_is_wal(name):
        found.append(
            checks.Error(
                f"{where} is SQLite without WAL mode: the web process and leek's workers "
                "will see 'database is locked'.",
                hint="Add to OPTIONS: 'init_command': 'PRAGMA journal_mode=WAL; "
                "PRAGMA synchronous=NORMAL;'",
                id="leek.E004",
            )
        )
    # Python's sqlite3 waits 5 s when OPTIONS has no timeout.
    if options.get("timeout", 5) < MIN_SQLITE_TIMEOUT:
        found.append(
            checks.Error(
                f"{where} is SQLite with no busy timeout of {MIN_SQLITE_TIMEOUT} s or more: "
                "concurrent writers fail at once with 'database is locked'.",
                hint="Add to OPTIONS: 'timeout': 20",
                id="leek.E005",
            )
        )
    if str(options.get("transaction_mode", "")).upper() != "IMMEDIATE":
        found.append(
            checks.Warning(
                f"{where} is SQLite with deferred transactions: a transaction.atomic() block "
                "that reads then writes fails with 'database is locked' when another process "
                "writes, without waiting for the busy timeout.",
                hint="Add to OPTIONS: 'transaction_mode': 'IMMEDIATE'",
                id="leek.W001",
            )
        )
    return found


def _file_is_wal(name: str) -> bool:
    offset, marker = _WAL_HEADER
    try:
        with open(os.fspath(name), "rb") as db_file:
            db_file.seek(offset)
            return db_file.read(len(marker)) == marker
    except OSError:
        return False


def check_backend(alias: str, queues: set[str]) -> list[checks.CheckMessage]:
    """Check a TASKS entry naming leek's backend: leek installed, a server for each queue."""
    where = f"TASKS[{alias!r}]"
    if not apps.is_installed("leek"):
        return [
            checks.Error(
                f"{where} uses leek.backend.LeekBackend, but 'leek' is not in INSTALLED_APPS: "
                "its task table does not exist.",
                hint="Add 'leek' to INSTALLED_APPS and run manage.py migrate.",
                id="leek.E006",
            )
        ]
    try:
        pools = conf.get().pools
    except ImproperlyConfigured:
        return []  # check_settings reports it
    missing = sorted(set(queues) - set(pools)) if pools else []
    if not missing:
        return []
    return [
        checks.Warning(
            f"{where}['QUEUES'] names {', '.join(map(repr, missing))}, which no leek server "
            f"runs: LEEK['pools'] is {list(pools)!r}. Tasks enqueued there wait for ever.",
            hint=f"Add {missing[0]!r} to LEEK['pools'] (or run a server with --pool "
            f"{missing[0]}), or take it out of QUEUES.",
            id="leek.W002",
        )
    ]
