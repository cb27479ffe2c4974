"""What to write on the row of a task whose worker died, and finding such rows at start.

Used by the supervisor in the server process. The message says what happened: the worker's
pid, its exit code or signal, its last resident memory, and whether leek killed it and why.
"""

from __future__ import annotations

import logging

import psutil
from django.db import DatabaseError

from leek.models import Task, TaskStatus
from leek.pool.handles import WorkerHandle
from leek.pool.limits import MB

logger = logging.getLogger("leek.pool")

WORKER_LOST = "leek.exceptions.WorkerLost"
TIMED_OUT = "leek.exceptions.TaskTimedOut"


def describe_loss(handle: WorkerHandle) -> tuple[str, str]:
    """Return the error class path and the message for the task a dead worker held."""
    task = f"task {handle.task_id} {handle.callable_path}"
    if handle.kill_kind == "timeout":
        return TIMED_OUT, (
            f"{task} ran past its time limit of {handle.timeout:g} s; leek killed worker "
            f"{handle.pid} and its child processes"
        )
    by = f"by leek: {handle.killed_for}" if handle.killed_for else "not by leek"
    return WORKER_LOST, (
        f"worker {handle.pid} {handle.describe_exit()} (last RSS {handle.last_rss / MB:.0f} "
        f"MB, {by}) while running {task}"
    )


def record_loss(task_id: int, pid: int, path: str, reason: str) -> str:
    """Write the loss on the row; return its new status ("" if it was not that worker's)."""
    logger.error("task %s: %s", task_id, reason)
    try:
        if path == WORKER_LOST:
            status = Task.objects.lose(task_id, pid, reason)
        elif Task.objects.fail(task_id, pid, path, f"{path}: {reason}"):
            status = TaskStatus.FAILED
        else:
            status = ""
    except DatabaseError:
        logger.exception("cannot record the loss of task %s", task_id)
        return ""
    if status == TaskStatus.READY:
        logger.warning("task %s goes back to READY (its lost_retries allow it)", task_id)
    return status


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def unclaim(task_ids: list[int], pid: int) -> None:
    """Put back READY, untouched, tasks a dead worker may have claimed but never started."""
    if not task_ids:
        return
    try:
        for task_id in Task.objects.unclaim(task_ids, pid):
            logger.info("task %s: worker %s died before starting it; READY again", task_id, pid)
    except DatabaseError:
        logger.exception("cannot put tasks %s back to READY", task_ids)


def recover_orphans(host: str) -> int:
    """Settle tasks left RUNNING on `host` by workers that no longer exist; return how many."""
    found = 0
    for task_id, pid in Task.objects.running_on(host).values_list("id", "worker_pid"):
        if pid and _alive(pid):
            continue  # a live worker, maybe another server's on this host
        reason = (
            f"worker {pid} on {host} was gone while running task {task_id} (its server "
            "stopped without settling it; found at the next start)"
        )
        if record_loss(task_id, pid, WORKER_LOST, reason):
            found += 1
    return found
