"""Bound every wait of the server process on its database: connect, statements, a dead peer.

Runs in the server process: leek.commands.serve calls `apply()` before its first query, so the
connections of the supervisor's loop (the sweep, the settling of lost tasks) and of its threads
(the heartbeat) all carry the bounds. Workers are processes of their own, started afresh
(spawn) from the project's settings, and their tasks may run long queries: nothing here
reaches them.

A server-side statement timeout alone does not bound a wait on a database whose packets vanish
(a cut link, a firewall that drops them): no answer comes back, not even the timeout's. So on
PostgreSQL the connection's socket gives up by itself too (libpq's `tcp_user_timeout` for data
sent and never acknowledged, keepalives for an answer that never comes); on MariaDB and MySQL
the client's read and write timeouts do both. SQLite has no network: its busy timeout
(OPTIONS["timeout"]) already bounds the one wait it has, for another writer's lock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from django.db import connections


def apply(seconds: float) -> None:
    """Give every database connection of this process the bounds of `seconds` (0: none).

    Changes the process's DATABASES settings in place (this process only) and closes the
    connections already open, so that the next one is made with the bounds.
    """
    if not seconds:
        return
    for alias in connections:
        connection = connections[alias]
        connection.settings_dict["OPTIONS"] = bounded_options(
            connection.vendor, connection.settings_dict.get("OPTIONS") or {}, seconds
        )
        connection.close()


def bounded_options(vendor: str, options: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """Return connection OPTIONS with the bounds of `seconds` added; the project's own stay."""
    whole = max(2, math.ceil(seconds))  # libpq and mysqlclient take whole seconds
    if vendor == "postgresql":
        added: dict[str, Any] = {
            "connect_timeout": whole,
            "keepalives": 1,
            "keepalives_idle": max(1, math.ceil(seconds / 2)),
            "keepalives_interval": max(1, math.ceil(seconds / 4)),
            "keepalives_count": 2,
            "tcp_user_timeout": round(seconds * 1000),
        }
        found = {**added, **options}
        startup = str(options.get("options", ""))
        # And on the database's side: a transaction this server left open (it was cut off
        # mid-way) ends, and frees its locks, instead of holding them for hours.
        ms = round(seconds * 1000)
        for name, value in (
            ("statement_timeout", ms),
            ("idle_in_transaction_session_timeout", ms),
            ("tcp_keepalives_idle", added["keepalives_idle"]),
            ("tcp_keepalives_interval", added["keepalives_interval"]),
            ("tcp_keepalives_count", 2),
        ):
            if name not in startup:
                startup = f"{startup} -c {name}={value}".strip()
        found["options"] = startup
        return found
    if vendor == "mysql":
        # mysqlclient tries a read up to three times: a silent peer costs 3 x read_timeout.
        added = {"connect_timeout": whole, "read_timeout": whole, "write_timeout": whole}
        return {**added, **options}
    return dict(options)
