"""What to write on the row of a task whose worker died, and finding such rows at start.

Used in the server process by the supervisor and leek.pool.outcomes. The message says what
happened: the worker's pid, its exit code or signal, its last resident memory, and whether
leek killed it and why. A write the database refuses is written again later (Settler).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from django.db import IntegrityError, InterfaceError, OperationalError, close_old_connections

from leek.models import Task, TaskStatus
from leek.pool.handles import WorkerHandle
from leek.pool.limits import MB
from leek.processes import may_hold
from leek.states import TERMINATED, Claim

logger = logging.getLogger("leek.pool")

WORKER_LOST = "leek.exceptions.WorkerLost"
TIMED_OUT = "leek.exceptions.TaskTimedOut"
# Which counter of leek.pool.outcomes a loss adds to, by its error class path.
COUNTED = {TIMED_OUT: "timed_out", TERMINATED: "terminated"}


def describe_loss(handle: WorkerHandle) -> tuple[str, str]:
    """Return the error class path and the message for the task a dead worker held."""
    task = f"task {handle.task_id} {handle.callable_path}"
    if handle.kill_kind == "timeout":
        return TIMED_OUT, (
            f"{task} ran past its time limit of {handle.timeout:g} s; leek killed worker "
            f"{handle.pid} and its child processes"
        )
    if handle.kill_kind == "terminated":
        return TERMINATED, (
            f"{task} {handle.killed_for}; leek killed worker {handle.pid} and its child processes"
        )
    by = f"by leek: {handle.killed_for}" if handle.killed_for else "not by leek"
    return WORKER_LOST, (
        f"worker {handle.pid} {handle.describe_exit()} (last RSS {handle.last_rss / MB:.0f} "
        f"MB, {by}) while running {task}"
    )


def record_loss(task_id: int, claim: Claim, path: str, reason: str) -> str:
    """Write the loss on the row; return its new status ("" if it was not that worker's).

    Database errors are the caller's (Settler.write tries again later).
    """
    if path == WORKER_LOST:
        status = Task.objects.lose(task_id, claim, reason)
    elif Task.objects.fail(task_id, claim, path, f"{path}: {reason}"):
        status = TaskStatus.FAILED
    else:
        status = ""
    if status == TaskStatus.READY:
        logger.warning("task %s goes back to READY (its lost_retries allow it)", task_id)
    elif not status:
        # A late write: a server that took this one for gone settled the task meanwhile.
        logger.warning(
            "task %s: the loss of worker %s on %s (%s) was discarded: the row is no longer "
            "RUNNING under that worker's claim (settled elsewhere)",
            task_id,
            claim.pid,
            claim.host,
            path,
        )
    return status


def unclaim(task_ids: list[int], pid: int, host: str) -> None:
    """Put back READY, untouched, tasks a dead worker may have claimed but never started."""
    for task_id in Task.objects.unclaim(task_ids, pid, host):
        logger.info("task %s: worker %s died before starting it; READY again", task_id, pid)


class Settler:
    """Writes what the supervisor settles on dead workers' rows, until the database takes it.

    A write the database refuses (it went away, or the session was cut) is kept and tried
    again every RETRY_INTERVAL seconds; otherwise the row would stay RUNNING under a dead
    pid until the next start's orphan recovery. Each write is conditional on the row's
    state, so writing it late changes nothing that moved on meanwhile.
    """

    RETRY_INTERVAL = 1.0

    def __init__(self) -> None:
        self.waiting: list[tuple[str, Callable[[], object]]] = []
        self.retry_at = 0.0

    def write(self, what: str, write: Callable[[], object], again: bool = False) -> None:
        """Run `write` (which writes `what`); keep it for later if the database fails it."""
        try:
            write()
        # Down, cut, locked: transient. And a unique key another task took between the
        # check and the write of a task going back to READY: the next try sees it.
        except (OperationalError, InterfaceError, IntegrityError) as exc:
            log = logger.debug if again else logger.error
            log("cannot write %s, trying again every %g s: %s", what, self.RETRY_INTERVAL, exc)
            self.waiting.append((what, write))
            self.retry_at = time.monotonic() + self.RETRY_INTERVAL

    def retry_if_due(self, now: float) -> None:
        """Write again what the database refused, once its interval has passed."""
        if self.waiting and now >= self.retry_at:
            self.retry()

    def retry(self) -> None:
        """Write again what the database refused."""
        close_old_connections()  # a broken connection is replaced, not used again
        waiting, self.waiting = self.waiting, []
        for what, write in waiting:
            self.write(what, write, again=True)
        if not self.waiting:
            logger.info("the database took the writes it had refused")

    def abandon(self) -> None:
        """Try once more what the database refused, and name what stays unwritten.

        For a server that stops: the rows stay RUNNING under dead workers' pids, which the
        next start's recover_orphans settles.
        """
        if self.waiting:
            self.retry()
        for what, _ in self.waiting:
            logger.error(
                "stopping without writing %s (the database does not answer); the next start "
                "settles what is left RUNNING under dead workers",
                what,
            )


def recover_orphans(host: str, before: datetime) -> int:
    """Settle tasks left RUNNING on `host` by workers that no longer exist; return how many.

    Only tasks started `before` (this server's start): later ones are its own workers', which
    it settles itself. Database errors are the caller's (Settler.write tries again later).
    """
    found = 0
    rows = Task.objects.running_on(host).filter(started_at__lt=before)
    rows = rows.values_list("id", "worker_pid", "started_at", "attempts")
    for task_id, pid, started_at, attempt in rows:
        if may_hold(pid, started_at):
            continue  # a live worker, maybe another server's on this host
        reason = (
            f"worker {pid} on {host} was gone while running task {task_id} (its server "
            "stopped without settling it; found at the next start)"
        )
        logger.error("task %s: %s", task_id, reason)
        if record_loss(task_id, Claim(pid, host, attempt), WORKER_LOST, reason):
            found += 1
    return found
