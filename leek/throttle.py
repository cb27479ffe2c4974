"""Concurrency and rate limits: held in the database, so they hold across every server.

A task offloaded with `max_concurrency` or `rate` carries a limit key (its `concurrency_key`,
or its callable's path). Two processes use this module:

- A worker claims such a task here, not with the plain claim of leek.hotpath: in its claim
  transaction it locks the key's row of `TaskLimit` (SELECT ... FOR UPDATE; on SQLite the
  write lock the transaction holds already does it), counts the key's RUNNING tasks, and
  reads when the key may start again. A key that is full refuses the claim: the task stays
  READY, untouched, and the worker reports the id skipped. So does a task with as many
  tasks of its key and pool before it in dispatch order (due, READY) as the key has free
  slots: the tasks of a key start in priority order. A claim under a rate moves the
  key's next start `rate_interval` seconds on. The lock is held to the commit, so two
  claims of one key are one after the other, whatever server they run on; a transaction
  locks one key at most (Writer.refused ends it), so two cannot wait for each other.
- The server's sweep reads READY tasks under limits with `due()`: for each key, only as
  many as it can start now (its free slots, one for a rate whose next start has come), in
  dispatch order, so that waiting tasks are not handed out to be refused again and again.
  It wakes when a task under a limit ends (the worker says so) and when a key's next start
  comes (`next_start()`).

A worker that dies holding a task frees its slot by the worker-lost rule: the task's row
leaves RUNNING, and the count is of RUNNING rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import models
from django.utils import timezone

from leek.models import PoolPause, Task, TaskLimit, TaskStatus

if TYPE_CHECKING:
    from leek.hotpath import Claimed, Writer

# Stands for "no concurrency limit" in the sweep's arithmetic.
UNLIMITED = 2**31 - 1

# The statements, written once per database vendor and parameter style.
_written: dict[tuple[str, str], dict[str, str]] = {}


def _statements(writer: Writer) -> dict[str, str]:
    found = _written.get((writer.connection.vendor, writer.param))
    if found is not None:
        return found
    connection = writer.connection
    q = connection.ops.quote_name
    tasks, limits = q(Task._meta.db_table), q(TaskLimit._meta.db_table)
    key = q("key")
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    insert = {
        "sqlite": f"INSERT OR IGNORE INTO {limits} ({key}) VALUES (%s)",
        "postgresql": f"INSERT INTO {limits} ({key}) VALUES (%s) ON CONFLICT DO NOTHING",
    }.get(connection.vendor, f"INSERT IGNORE INTO {limits} ({key}) VALUES (%s)")
    written = {
        "limits": (
            f"SELECT limit_key, max_concurrency, rate_interval, {q('pool')}, priority "
            f"FROM {tasks} "
            "WHERE id = %s AND status = %s AND limit_key IS NOT NULL AND run_after <= %s"
        ),
        # How many of the tasks of a key and pool that come before one, up to a number.
        "before": (
            f"SELECT COUNT(*) FROM (SELECT id FROM {tasks} WHERE limit_key = %s "
            f"AND {q('pool')} = %s AND status = %s AND run_after <= %s "
            "AND (priority > %s OR (priority = %s AND id < %s)) LIMIT %s) AS ahead"
        ),
        # Whether the key may start a task now by its rate; locks the key's row.
        "lock": (
            f"SELECT next_start_at IS NULL OR next_start_at <= %s FROM {limits} "
            f"WHERE {key} = %s{lock}"
        ),
        "insert": insert,
        "running": f"SELECT COUNT(*) FROM {tasks} WHERE limit_key = %s AND status = %s",
        "pace": f"UPDATE {limits} SET next_start_at = %s WHERE {key} = %s",
    }
    if writer.param != "%s":
        written = {k: v.replace("%s", writer.param) for k, v in written.items()}
    _written[connection.vendor, writer.param] = written
    return written


def claim(writer: Writer, task_id: int, pid: int, host: str) -> Claimed | None:
    """Claim a READY, due task under a limit if its key lets it start now; else None.

    Called by Writer.claim when the plain claim found nothing: None also when the task is
    not there to take, or has no limit.
    """
    sql, cursor = _statements(writer), writer.cursor
    now = timezone.now()
    adapt = writer.connection.ops.adapt_datetimefield_value
    cursor.execute(sql["limits"], (task_id, TaskStatus.READY.value, adapt(now)))
    found = cursor.fetchone()
    if found is None:
        return None
    key, most, interval, pool, priority = found
    free = _free(writer, sql, key, most, interval, adapt(now))
    task = None
    if free:
        ahead = (key, pool, TaskStatus.READY.value, adapt(now), priority, priority, task_id)
        cursor.execute(sql["before"], (*ahead, free))
        if cursor.fetchone()[0] < free:
            task = writer.claim_limited(task_id, pid, host, now)
    if task is not None and interval:
        cursor.execute(sql["pace"], (adapt(now + timedelta(seconds=interval)), key))
    # Refused (or taken meanwhile): the transaction holds the key's lock, and takes no other.
    writer.refused = task is None
    return task


def _free(
    writer: Writer,
    sql: dict[str, str],
    key: str,
    most: int | None,
    interval: float | None,
    now: Any,
) -> int:
    """Lock the row of `key` (made if missing); return how many of its tasks may start."""
    cursor = writer.cursor
    cursor.execute(sql["lock"], (now, key))
    found = cursor.fetchone()
    if found is None:
        cursor.execute(sql["insert"], (key,))
        cursor.execute(sql["lock"], (now, key))
        found = cursor.fetchone()
    if not found[0]:
        return 0
    free = UNLIMITED if most is None else most
    if most is not None:
        cursor.execute(sql["running"], (key, TaskStatus.RUNNING.value))
        free = most - cursor.fetchone()[0]
    # Below 0 when tasks of the key with a higher max_concurrency run: none free, then.
    return max(min(free, 1) if interval else free, 0)


def look(pools: Iterable[str], limit: int) -> tuple[list[tuple[int, int]], datetime | None]:
    """Return what `due()` and `next_start()` say, at the cost of one query when no task waits.

    For the sweep of a server whose pools have no READY task under a limit, nearly always.
    """
    if not _ready(pools).exists():
        return [], None
    return (due(pools, limit) if limit > 0 else []), next_start(pools)


def due(pools: Iterable[str], limit: int) -> list[tuple[int, int]]:
    """Return (id, priority) of READY tasks under limits that may start now, at most `limit`.

    For each key, its first tasks in dispatch order, as many as it has room for: its
    max_concurrency less its RUNNING tasks, and one at most for a rate. Keys that are full
    or paced are left out in the query, which reads the rows in dispatch order (an index of
    their own): however many tasks wait under one key, a look reads at most `limit` rows.
    """
    now = timezone.now()
    running = Task.objects.filter(status=TaskStatus.RUNNING, limit_key__isnull=False)
    busy = {
        key: (count, most)
        for key, count, most in running.order_by()
        .values("limit_key")
        .annotate(count=models.Count("id"), most=models.Min("max_concurrency"))
        .values_list("limit_key", "count", "most")
    }
    full = [key for key, (count, most) in busy.items() if most is not None and count >= most]
    paced = TaskLimit.objects.filter(next_start_at__gt=now).values("key")
    rows = _ready(pools).filter(run_after__lte=now).exclude(limit_key__in=paced)
    if full:
        rows = rows.exclude(limit_key__in=full)
    found = rows.order_by("-priority", "id").values_list(
        "id", "priority", "limit_key", "max_concurrency", "rate_interval"
    )
    handed: Counter[str] = Counter()
    chosen = []
    for task_id, priority, key, most, interval in found[:limit]:
        room = UNLIMITED if most is None else most - busy.get(key, (0, None))[0]
        if handed[key] < (min(room, 1) if interval else room):
            handed[key] += 1
            chosen.append((task_id, priority))
    return chosen


def next_start(pools: Iterable[str]) -> datetime | None:
    """Return when the first key whose rate holds READY tasks back may start one."""
    waiting = _ready(pools).values("limit_key")
    later = TaskLimit.objects.filter(next_start_at__gt=timezone.now(), key__in=waiting)
    return later.aggregate(first=models.Min("next_start_at"))["first"]


def _ready(pools: Iterable[str]) -> models.QuerySet:
    """Return the READY tasks under limits of `pools` (all when empty), paused pools left out."""
    rows = Task.objects.filter(status=TaskStatus.READY, limit_key__isnull=False)
    rows = rows.exclude(pool__in=PoolPause.objects.values("pool"))
    pools = tuple(pools)
    return rows.filter(pool__in=pools) if pools else rows
