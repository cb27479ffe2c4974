"""The worker processes the supervisor keeps: spawned, told apart by generation, retired.

Used by the supervisor in the server process. A worker is spawned into the current
generation, up to the pool size; SIGHUP makes a new generation current, and the old one
retires once the new one has booted, or serves on when the new one cannot boot
(leek.pool.boot). Each worker's pipe and sentinel are watched by the supervisor's selector
from its spawn until it is forgotten at its exit.
"""

from __future__ import annotations

import logging
import multiprocessing
import selectors
import time
from collections.abc import Iterator
from datetime import datetime

from django.utils import timezone

from leek.pool import messages, worker
from leek.pool.dispatch import Dispatcher
from leek.pool.handles import WorkerHandle, WorkerState
from leek.pool.limits import Limits

logger = logging.getLogger("leek.pool")


class Roster:
    """The live workers, how many there should be, and which generation of them is current."""

    def __init__(
        self,
        selector: selectors.BaseSelector,
        dispatcher: Dispatcher,
        limits: Limits,
        size: int,
    ) -> None:
        self.selector = selector
        self.dispatcher = dispatcher
        self.limits = limits
        self.size = size
        self.generation = 1
        # When each generation started: it stamps the schedules its workers record
        # (leek.schedule_records), so that the newest code's declarations hold.
        self.started_at: dict[int, datetime] = {1: timezone.now()}
        self.context = multiprocessing.get_context("spawn")
        self.workers: dict[int, WorkerHandle] = {}  # by sentinel
        # A worker came, went or changed its state since the last report (the supervisor's).
        self.changed = True

    def __iter__(self) -> Iterator[WorkerHandle]:
        """Iterate over the live workers (a copy: a worker may end meanwhile)."""
        return iter(list(self.workers.values()))

    def __len__(self) -> int:
        """Return how many workers are live."""
        return len(self.workers)

    def __contains__(self, handle: WorkerHandle) -> bool:
        """Tell whether `handle` is live, not yet forgotten."""
        return self.workers.get(handle.process.sentinel) is handle

    def spawn(self) -> WorkerHandle:
        """Start one worker process of the current generation."""
        parent_end, child_end = self.context.Pipe(duplex=True)
        process = self.context.Process(
            target=worker.main,
            args=(child_end, self.limits.max_memory, self.started_at[self.generation]),
            name=f"leek-worker-g{self.generation}",
        )
        process.start()
        child_end.close()
        handle = WorkerHandle(
            process, parent_end, self.generation, task_quota=self.limits.task_quota()
        )
        self.workers[process.sentinel] = handle
        self.selector.register(process.sentinel, selectors.EVENT_READ, ("exit", handle))
        self.selector.register(parent_end, selectors.EVENT_READ, ("message", handle))
        logger.debug("spawned worker %s (generation %s)", handle.pid, handle.generation)
        self.changed = True
        return handle

    def new_generation(self) -> None:
        """Make a fresh generation current (a reload): its workers are spawned from now."""
        self.generation += 1
        self.started_at[self.generation] = timezone.now()

    def forget(self, handle: WorkerHandle) -> None:
        """Stop watching a worker whose process ended, and close its pipe."""
        self.changed = True
        del self.workers[handle.process.sentinel]
        self.selector.unregister(handle.process.sentinel)
        self.selector.unregister(handle.conn)
        handle.conn.close()

    def current(self) -> list[WorkerHandle]:
        """Return the workers of the current generation that are not retiring."""
        return [
            h
            for h in self.workers.values()
            if h.generation == self.generation and h.state is not WorkerState.RETIRING
        ]

    def maintain(self, spawn_after: float) -> None:
        """Spawn up to the pool size; retire surplus and, once booted, old generations.

        No worker is spawned before `spawn_after` (monotonic time: leek.pool.boot backs off).
        """
        current = self.current()
        if len(current) < self.size and time.monotonic() >= spawn_after:
            for _ in range(self.size - len(current)):
                self.spawn()
        for surplus in [h for h in current if h.state is WorkerState.IDLE][self.size :]:
            self.retire(surplus)
        booted = [h for h in self.current() if h.state is not WorkerState.STARTING]
        if len(booted) >= self.size:
            for old in self.workers.values():
                if old.generation < self.generation and old.state is not WorkerState.RETIRING:
                    self.retire(old)

    def retire(self, handle: WorkerHandle) -> None:
        """Ask a worker to exit after its current task; its ids sent ahead go to others."""
        handle.state = WorkerState.RETIRING
        handle.retired_at = time.monotonic()
        self.changed = True
        handle.send(messages.Retire())
        self.dispatcher.give_back(handle)

    def dispatch(self) -> None:
        """Send ids to the workers that have room for more (leek.pool.dispatch)."""
        self.dispatcher.dispatch(self.workers.values(), self.size, self.generation)

    def old_serving(self) -> bool:
        """Tell whether workers of an older generation are still live."""
        return any(h.generation < self.generation for h in self.workers.values())

    def fall_back(self) -> None:
        """Give up on the current generation: back to the old one; the new one's workers go."""
        self.generation -= 1
        for other in list(self.workers.values()):
            if other.generation > self.generation and other.state is not WorkerState.RETIRING:
                self.retire(other)
