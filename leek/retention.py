"""Deleting old finished tasks: `manage.py leek purge` and the LEEK["retention"] setting.

Runs in the shell of `manage.py leek purge`, and in the server's heartbeat thread (off the
supervisor's loop) when LEEK["retention"] is set. Rows go in batches, each its own short
statement, oldest id first: no lock is held for long, and a table of millions of rows is
worked through without holding the database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from leek.models import Server, Task, TaskLimit, TaskStatus

logger = logging.getLogger("leek.server")

# Rows deleted by one statement of `manage.py leek purge`, and by one of the server's.
BATCH = 1000
SERVER_BATCH = 200
# Seconds the server waits after a batch that found nothing more to delete.
IDLE_INTERVAL = 60.0


def delete_batch(statuses: Iterable[str], before: datetime, size: int) -> int:
    """Delete up to `size` tasks of `statuses` that finished before `before`; return how many."""
    rows = Task.objects.filter(status__in=list(statuses), finished_at__lt=before)
    ids = list(rows.order_by("id").values_list("id", flat=True)[:size])
    if not ids:
        return 0
    deleted, _ = Task.objects.filter(id__in=ids, status__in=list(statuses)).delete()
    return deleted


def count(statuses: Iterable[str], before: datetime) -> int:
    """Count the tasks of `statuses` that finished before `before`."""
    return Task.objects.filter(status__in=list(statuses), finished_at__lt=before).count()


def forget_servers(before: datetime) -> int:
    """Delete the rows of servers that stopped, or last beat, before `before`; return how many."""
    deleted, _ = Server.objects.filter(heartbeat_at__lt=before).delete()
    return deleted


def forget_limits(before: datetime) -> int:
    """Delete the rows of limit keys no waiting or running task has, idle since `before`.

    A key's row (leek.throttle) holds only when its next task may start: one that is past
    and unused is made again by the next claim of the key.
    """
    waiting = (TaskStatus.READY, TaskStatus.RUNNING)
    busy = Task.objects.filter(status__in=waiting, limit_key__isnull=False).values("limit_key")
    idle = Q(next_start_at__isnull=True) | Q(next_start_at__lt=before)
    deleted, _ = TaskLimit.objects.filter(idle).exclude(key__in=busy).delete()
    return deleted


def purge(statuses: Iterable[str], older_than: float, batch: int = BATCH) -> int:
    """Delete every task of `statuses` finished more than `older_than` s ago; return how many."""
    statuses = list(statuses)
    before = timezone.now() - timedelta(seconds=older_than)
    total = 0
    while True:
        deleted = delete_batch(statuses, before, batch)
        total += deleted
        if deleted < batch:
            return total


class Purger:
    """The server's own purge by LEEK["retention"]: one small batch a step, at a low rate."""

    def __init__(self, rules: Iterable[tuple[str, float]], batch: int = SERVER_BATCH) -> None:
        self.rules = tuple(rules)
        self.batch = batch
        self.next_at = 0.0  # monotonic
        self.deleted = 0

    def step(self) -> int:
        """Delete one batch per rule, when due; return how many rows went."""
        now = time.monotonic()
        if now < self.next_at:
            return 0
        deleted = 0
        full = False
        for status, age in self.rules:
            found = delete_batch([status], timezone.now() - timedelta(seconds=age), self.batch)
            deleted += found
            full = full or found == self.batch
        if not full and self.rules:
            longest = max(age for _, age in self.rules)
            forget_servers(timezone.now() - timedelta(seconds=longest))
            forget_limits(timezone.now() - timedelta(seconds=longest))
        if deleted:
            self.deleted += deleted
            logger.info("retention: deleted %d finished tasks", deleted)
        # More to go: the next batch at the next step (about a second); else much later.
        self.next_at = now if full else now + IDLE_INTERVAL
        return deleted
