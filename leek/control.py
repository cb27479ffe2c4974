"""The operator's verbs: retry, cancel, terminate, pause, resume, enable or disable a schedule,
and what they look at.

Plain functions on the database, called by the admin, `manage.py leek <verb>` and any view
alike; each returns what it did, and the caller only formats it. Runs in whichever process
calls it (a web process, a shell). Nothing here talks to a worker or a server: a
termination is a request on the task's row, which the server holding the task reads (off
its loop) and carries out by killing that worker's process tree; a pause is a row that every
server reads before it starts a task of the pool.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import NamedTuple

from django.db import IntegrityError, models, router, transaction
from django.utils import timezone

from leek import conf
from leek.models import PoolPause, Schedule, ScheduleRun, Server, Task, TaskStatus

# How long a server that stopped cleanly is still listed by servers().
STOPPED_SHOWN_FOR = 3600


class PoolBacklog(NamedTuple):
    """The READY tasks of one pool."""

    pool: str
    # READY tasks, due or not.
    ready: int
    # When the longest-waiting due task became due (its run_after); None: none is due.
    oldest: datetime | None


def _each(task_ids: Iterable[int], act) -> list[int]:
    return [task_id for task_id in dict.fromkeys(int(t) for t in task_ids) if act(task_id)]


def retry(task_ids: Iterable[int], user: str) -> list[int]:
    """Run FAILED tasks again (READY, a new attempt of the same call); return their ids.

    The attempt that failed stays readable in the task's history.
    """
    return _each(task_ids, lambda task_id: Task.objects.rerun(task_id, str(user)))


def cancel(task_ids: Iterable[int], user: str) -> list[int]:
    """End READY tasks FAILED with Cancelled, "cancelled by <user>"; return their ids."""
    return _each(task_ids, lambda task_id: Task.objects.cancel(task_id, str(user)))


def terminate(task_ids: Iterable[int], user: str) -> list[int]:
    """Ask the servers to kill the workers of RUNNING tasks; return the ids asked for.

    Within a couple of seconds the server holding each task kills its worker's process tree
    and the task ends FAILED with Terminated, "terminated by <user>"; a new worker replaces
    the old one, and the worker's other tasks go back to READY untouched.
    """
    return _each(task_ids, lambda task_id: Task.objects.request_termination(task_id, str(user)))


def pause(pool: str, user: str) -> bool:
    """Pause a pool: no server starts its tasks until resumed. False if it was paused."""
    try:
        with transaction.atomic(using=router.db_for_write(PoolPause)):
            PoolPause.objects.create(pool=pool, paused_by=str(user))
    except IntegrityError:
        return False
    return True


def resume(pool: str, user: str) -> bool:
    """Let a paused pool's tasks start again. False if it was not paused."""
    deleted, _ = PoolPause.objects.filter(pool=pool).delete()
    return bool(deleted)


def paused_pools() -> set[str]:
    """Return the pools that are paused."""
    return set(PoolPause.objects.values_list("pool", flat=True))


def backlog() -> list[PoolBacklog]:
    """Return the READY tasks per pool, with when the longest-waiting one became due."""
    now = timezone.now()
    rows = (
        Task.objects.filter(status=TaskStatus.READY)
        .values("pool")
        .annotate(ready=models.Count("id"), oldest=models.Min("run_after"))
        .order_by("pool")
    )
    return [
        PoolBacklog(row["pool"], row["ready"], row["oldest"] if row["oldest"] <= now else None)
        for row in rows
    ]


def servers() -> list[Server]:
    """Return the servers that run (`.stale` set when they stopped beating) or just stopped."""
    lease = conf.get().server_lease
    now = timezone.now()
    recent = now - timedelta(seconds=STOPPED_SHOWN_FOR)
    found = list(
        Server.objects.filter(models.Q(stopped_at__isnull=True) | models.Q(stopped_at__gte=recent))
    )
    for server in found:
        server.stale = server.is_stale(lease, now)
    return found


class ScheduleState(NamedTuple):
    """A schedule as an operator sees it: when it runs next, its last run and how that ended."""

    schedule: Schedule
    # None: disabled, gone, or never again.
    next_at: datetime | None
    # The last slot that ran a task, that task, and its status ("" once the task was purged).
    last_slot: datetime | None
    last_task_id: int | None
    last_status: str


def schedule_states() -> list[ScheduleState]:
    """Return every schedule, by name, with its next run and its last run's outcome."""
    found = []
    for schedule in Schedule.objects.order_by("name"):
        last = (
            ScheduleRun.objects.filter(schedule=schedule, task_id__isnull=False)
            .order_by("-slot")
            .values_list("slot", "task_id")
            .first()
        )
        slot, task_id = last or (None, None)
        status = ""
        if task_id is not None:
            status = Task.objects.filter(pk=task_id).values_list("status", flat=True).first() or ""
        found.append(ScheduleState(schedule, schedule.next_at(), slot, task_id, status))
    return found


def enable_schedules(names: Iterable[str], user: str) -> list[str]:
    """Let disabled schedules run again from their next slot; return the names enabled.

    The slots that passed while a schedule was disabled were not missed: none of them runs,
    even for a schedule that catches up.
    """
    now = timezone.now()
    return [
        name
        for name in dict.fromkeys(names)
        if Schedule.objects.filter(name=name, enabled=False).update(
            enabled=True, changed_by=str(user), changed_at=now, since=now
        )
    ]


def disable_schedules(names: Iterable[str], user: str) -> list[str]:
    """Stop schedules from running, on every server, until enabled; return the names disabled."""
    now = timezone.now()
    return [
        name
        for name in dict.fromkeys(names)
        if Schedule.objects.filter(name=name, enabled=True).update(
            enabled=False, changed_by=str(user), changed_at=now
        )
    ]
