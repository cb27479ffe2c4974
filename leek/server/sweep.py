"""Find READY tasks in the table that nobody announced, and feed them to the backlog.

Runs in the server process's main thread, called from the supervisor's loop. It makes good
every lost notification, every task saved while the server was down, and every delayed task
whose run_after has come: it wakes up at the next run_after, not only every interval. Tasks
under concurrency and rate limits are read apart (leek.throttle), only those that may start
now: it also wakes when a key's next start comes, and when told a task under a limit ended.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from django.db import DatabaseError, InterfaceError, close_old_connections
from django.utils import timezone

from leek import throttle
from leek.models import Task
from leek.server.backlog import Backlog

logger = logging.getLogger("leek.server")


class Sweeper:
    """Reads the next page of due READY ids into the backlog, on a schedule."""

    def __init__(self, backlog: Backlog, interval: float) -> None:
        self.backlog = backlog
        self.interval = interval
        self.next_at = 0.0  # monotonic; 0 sweeps at once
        self.failed = False  # the last sweep met a database error

    def seconds_left(self, now: float) -> float:
        """Return how long until the next sweep is due."""
        # The table holds due ids the window had no room for: page on once half is free.
        if self.backlog.overflowed and self.backlog.room() >= self.backlog.capacity // 2:
            return 0.0
        return max(0.0, self.next_at - now)

    def wake(self) -> None:
        """Sweep at the next round: a slot of a limit key may have freed."""
        self.next_at = 0.0

    def sweep_if_due(self, now: float) -> None:
        """Sweep when the time has come."""
        if self.seconds_left(now) <= 0:
            self.sweep()

    def sweep(self) -> int:
        """Add the next page of due READY ids; return how many were new."""
        self.backlog.overflowed = False
        pools = self.backlog.pools
        try:
            close_old_connections()
            # The first rows in dispatch order are those the window holds already (or that
            # workers have): read past them to find `room` new ones.
            limit = self.backlog.room() + self.backlog.held() if self.backlog.room() else 0
            rows = Task.objects.due(pools, limit=limit) if limit > 0 else []
            limited, next_start = throttle.look(pools, limit)
            added = self.backlog.add(rows) + self.backlog.add(limited)
            next_run_after = _earliest(Task.objects.next_run_after(pools), next_start)
        except (DatabaseError, InterfaceError) as exc:
            logger.warning("sweep failed, trying again in %.1f s: %s", self.interval, exc)
            self.next_at = time.monotonic() + self.interval
            self.failed = True
            return 0
        self.failed = False
        if limit <= 0 or len(rows) == limit:
            self.backlog.overflowed = True
        delay = self.interval
        if next_run_after is not None:
            delay = min(delay, max(0.0, (next_run_after - timezone.now()).total_seconds()))
        self.next_at = time.monotonic() + delay
        if added:
            logger.debug("sweep found %d READY tasks", added)
        return added


def _earliest(*times: datetime | None) -> datetime | None:
    """Return the earliest of the times given, None if none is."""
    known = [t for t in times if t is not None]
    return min(known) if known else None
