"""The database's clock: one time for every server that shares the database.

Runs in the server process (the heartbeat thread, the scheduler) and in workers at boot
(leek.schedule_records). Servers on several hosts compare each other's heartbeats; read from
each host's own clock, a host whose clock runs a minute behind would look silent to the
others and have its tasks settled while it runs them. So heartbeats are written, and leases
measured, in the database's time.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.conf import settings
from django.db import connections
from django.utils import timezone

# The current UTC time, as each vendor says it.
_NOW = {
    "postgresql": "SELECT now()",
    "mysql": "SELECT UTC_TIMESTAMP(6)",
    "sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')",
}


def now(alias: str) -> datetime:
    """Return the database's current time, as Django stores datetimes.

    Aware, in UTC; naive, in the current time zone, when USE_TZ is False.
    """
    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.execute(_NOW.get(connection.vendor, "SELECT CURRENT_TIMESTAMP"))
        (value,) = cursor.fetchone()
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value if settings.USE_TZ else timezone.make_naive(value)
