"""The limits a supervisor holds its workers to, and the psutil calls that measure and kill.

Used by the supervisor in the server process: it asks the Limits what to do with a worker,
measures workers with measure() and kills them with kill().
"""

from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass

import psutil

from leek.pool.handles import WorkerHandle

logger = logging.getLogger("leek.pool")

MB = 2**20


@dataclass(frozen=True, slots=True)
class Limits:
    """What a worker may use; 0 turns a limit off."""

    # Retire a worker after a task that left it above this resident memory (MB).
    max_memory: int = 0
    # Kill a worker at once, mid-task, above this resident memory (MB).
    max_memory_hard: int = 0
    # Retire a worker after about this many tasks.
    max_tasks: int = 0
    # Seconds a task may run when it does not say.
    task_timeout: float = 0
    # Seconds running tasks get to finish on SIGTERM / SIGINT.
    shutdown_timeout: float = 30.0

    def task_quota(self) -> int:
        """Return how many tasks a new worker may run: max_tasks, plus up to 10 % jitter.

        The jitter keeps a pool from recycling all its workers at the same moment.
        """
        if not self.max_tasks:
            return 0
        return self.max_tasks + random.randint(0, self.max_tasks // 10)

    def retire_reason(self, handle: WorkerHandle) -> tuple[str, str] | None:
        """Say why a worker that just ended a task should be replaced: (cause, why), or None.

        Reads its resident memory when there is a --max-memory.
        """
        if handle.task_quota and handle.tasks_done >= handle.task_quota:
            return "tasks", f"worker {handle.pid} ran {handle.tasks_done} tasks; replacing it"
        if self.max_memory:
            measure(handle)
            if handle.last_rss > self.max_memory * MB:
                return "memory", (
                    f"worker {handle.pid} uses {handle.last_rss / MB:.0f} MB, over "
                    f"--max-memory {self.max_memory} MB; replacing it"
                )
        return None

    def kill_reason(self, handle: WorkerHandle, now: float) -> tuple[str, str] | None:
        """Say why a busy worker must be killed now: (cause, why), or None."""
        if handle.timeout and now - handle.task_started_at >= handle.timeout:
            return "timeout", f"timed out after {handle.timeout:g} s"
        if self.max_memory_hard and handle.last_rss > self.max_memory_hard * MB:
            return "memory", (
                f"resident memory {handle.last_rss / MB:.0f} MB passed "
                f"--max-memory-hard {self.max_memory_hard} MB"
            )
        return None


def tree_rss(pid: int) -> int:
    """Return the resident memory of a process and all its children, in bytes."""
    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # it ended meanwhile
            total += child.memory_info().rss
    return total


def kill_tree(pid: int) -> int:
    """SIGKILL a process and every process below it; return how many children it had."""
    try:
        process = psutil.Process(pid)
        children = process.children(recursive=True)
    except psutil.Error:
        return 0  # already gone
    for victim in [process, *children]:
        with contextlib.suppress(psutil.Error):
            victim.kill()
    return len(children)


def measure(handle: WorkerHandle) -> None:
    """Read a worker's resident memory, its children's included, into its `last_rss`."""
    with contextlib.suppress(psutil.Error):  # exiting: its sentinel tells
        handle.last_rss = tree_rss(handle.pid)


def kill(handle: WorkerHandle, why: str, kind: str = "") -> None:
    """SIGKILL a worker and its children, noting why; on_exit then settles its task.

    `kind` is the restart cause its end counts as ("": none, as when the server stops).
    """
    handle.killed_for, handle.kill_kind = why, kind
    children = kill_tree(handle.pid)
    logger.warning("killed worker %s (and %s children): %s", handle.pid, children, why)
