"""Which worker gets which ids, and how many ahead: the supervisor's prefetch policy.

Used by the supervisor and its roster in the server process. A worker gets ids a little
ahead of its need, up to about PREFETCH_WINDOW of work by the mean time a worker has been
taking per task, so that it never waits for the supervisor between two short tasks, while a
higher-priority id waits behind no more than that window. The ids stay READY until a worker
claims one, so any of them can go to another worker at any time: the claim lets only one
run it.
"""

from __future__ import annotations

from collections.abc import Iterable

from leek.pool import messages
from leek.pool.handles import WorkerHandle, WorkerState
from leek.pool.interfaces import Backlog

# A worker holds ids for about this many seconds of work, at most MAX_PREFETCH. While tasks
# take less than SHORT_TASK it holds one id ahead at least.
PREFETCH_WINDOW = 0.001
MAX_PREFETCH = 16
SHORT_TASK = 0.02


class Dispatcher:
    """Spreads ids over the workers, each up to the prefetch depth."""

    def __init__(self, backlog: Backlog) -> None:
        self.backlog = backlog
        # Mean seconds from a worker's Started to its Finished (None until a task ends):
        # the task, recording it and claiming the next.
        self.mean_service: float | None = None

    def observe(self, seconds: float) -> None:
        """Take in how long a worker took for one task, from its start to its end."""
        mean = self.mean_service
        self.mean_service = seconds if mean is None else 0.8 * mean + 0.2 * seconds

    def depth(self) -> int:
        """Return how many tasks a worker may hold, running and sent ahead."""
        service = self.mean_service
        if service is None:
            return 1
        least = 2 if service < SHORT_TASK else 1
        return max(least, min(MAX_PREFETCH, int(PREFETCH_WINDOW / max(service, 1e-6))))

    def dispatch(self, workers: Iterable[WorkerHandle], size: int, generation: int) -> None:
        """Send ids to workers that have room, with at most `size` workers holding tasks.

        The current `generation` comes first, the emptiest first; an older generation
        serves too until the new one has booted. A worker is topped up once it is down to
        half its depth, so ids go out in batches.
        """
        if not len(self.backlog):
            return
        workers = list(workers)
        depth = self.depth()
        ready = [h for h in workers if h.state in (WorkerState.IDLE, WorkerState.BUSY)]
        ready.sort(key=lambda h: (h.generation != generation, h.load))
        # A retiring worker may have claimed an id it handed on before it read Retire: it
        # holds a task until it says so (Started, Skipped) or exits.
        holding = sum(1 for h in workers if h.load or h.handed_on)
        share = -(-len(self.backlog) // max(1, min(size, len(ready))))
        for handle in ready:
            if handle.load > depth // 2 or (not handle.load and holding >= size):
                continue
            room = min(depth - handle.load, share)
            if handle.task_quota:
                room = min(room, handle.task_quota - handle.tasks_done - handle.load)
            task_ids = self.backlog.take(room) if room > 0 else []
            if not task_ids:
                continue
            holding += not handle.load
            handle.queued += task_ids
            handle.state = WorkerState.BUSY
            handle.send(messages.Run(tuple(task_ids)))

    def give_back(self, handle: WorkerHandle) -> None:
        """Put the ids a worker holds and has not started back in the backlog."""
        for task_id in handle.queued:
            self.backlog.give_back(task_id)
        handle.handed_on += handle.queued
        handle.queued = []
