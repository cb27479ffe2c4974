"""How the tasks handed to workers ended, as the supervisor counts, logs and records it.

Used by the supervisor in the server process. A worker says that a task ended (Finished) or
that it ran none of some ids it was sent (Skipped). A worker that dies leaves the task it ran
to be recorded as lost, and the ids it handed on, one of which it may have claimed, to be
put back READY. Those rows are written through the Settler (leek.pool.losses), which writes
again what the database refuses; a loss counts once its write lands. The worker handles and
the backlog are the supervisor's to update.
"""

from __future__ import annotations

import logging
from datetime import datetime

from leek.pool import losses, messages
from leek.pool.handles import WorkerHandle
from leek.states import Claim

logger = logging.getLogger("leek.pool")

COUNTS = ("done", "failed", "retried", "lost", "timed_out", "terminated", "discarded")
# Which counter a Finished message adds to.
_COUNTED = {"SUCCESSFUL": "done", "FAILED": "failed", "READY": "retried"}


class Outcomes:
    """Counts and logs how the tasks ended, and records the tasks of dead workers."""

    def __init__(self, settler: losses.Settler, host: str) -> None:
        self.settler = settler
        self.host = host
        self.counts = dict.fromkeys(COUNTS, 0)
        # Ids workers were sent and did not claim: taken by another, or held back by a limit.
        self.skipped = 0

    def recover(self, before: datetime) -> None:
        """Settle the tasks that workers of an earlier server (started `before`) left RUNNING."""

        def write() -> None:
            self.counts["lost"] += losses.recover_orphans(self.host, before)

        # A database that is not up yet is waited for, as any other refused write.
        self.settler.write("the losses of workers gone before this start", write)

    def finished(self, pid: int, message: messages.Finished) -> None:
        """Count and log the end of a task that worker `pid` ran."""
        self.counts["discarded" if message.discarded else _COUNTED[message.status]] += 1
        log_finished(pid, message)

    def passed_over(self, task_ids: list[int]) -> None:
        """Count ids a worker was sent and ran none of."""
        self.skipped += len(task_ids)

    def lost(self, handle: WorkerHandle) -> None:
        """Record the task a dead worker held as lost."""
        path, described = losses.describe_loss(handle)
        task_id, claim = handle.task_id, Claim(handle.pid, self.host, handle.attempt)
        logger.error("task %s: %s", task_id, described)

        def write() -> None:
            if losses.record_loss(task_id, claim, path, described):
                self.counts[losses.COUNTED.get(path, "lost")] += 1

        self.settler.write(f"the loss of task {task_id} {handle.callable_path}", write)

    def unclaim(self, handle: WorkerHandle) -> None:
        """Put back READY the ids a dead worker handed on, if it claimed one it never started."""
        if handle.handed_on:
            ids, pid = handle.handed_on, handle.pid
            self.settler.write(
                f"the unclaim of tasks {ids} of worker {pid}",
                lambda: losses.unclaim(ids, pid, self.host),
            )


def log_finished(pid: int, message: messages.Finished) -> None:
    """Log a task's end on worker `pid`: its outcome, or that its outcome was dropped."""
    took = message.duration * 1000
    if message.discarded:
        logger.warning(
            "task %s %s ended %s in %.1f ms on worker %s, but its outcome was discarded: "
            "another server had settled it",
            message.task_id,
            message.callable_path,
            message.status,
            took,
            pid,
        )
        return
    log = logger.info if message.status == "SUCCESSFUL" else logger.warning
    log(
        "task %s %s %s in %.1f ms on worker %s%s",
        message.task_id,
        message.callable_path,
        message.status,
        took,
        pid,
        f": {message.error}" if message.error else "",
    )
