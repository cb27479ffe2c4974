"""What the supervisor knows of each worker process: its state, its task, its numbers.

Lives in the server process only; changed by the supervisor from what the worker says and
from how it ends, and by its roster (leek.pool.roster) when it retires the worker.
"""

from __future__ import annotations

import contextlib
import enum
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any


class WorkerState(enum.Enum):
    """Where a worker is in its life."""

    # Spawned; has not said Booted yet.
    STARTING = "starting"
    # Booted and waiting for a task.
    IDLE = "idle"
    # Holds tasks: one running, or ids sent to it that it has not claimed yet.
    BUSY = "busy"
    # Told to exit once its current task is done.
    RETIRING = "retiring"


@dataclass(slots=True)
class WorkerHandle:
    """One worker process, seen from the supervisor."""

    process: BaseProcess
    conn: Connection
    generation: int
    state: WorkerState = WorkerState.STARTING
    # The task it claimed and runs, and the ids sent ahead that it has not claimed yet.
    task_id: int | None = None
    queued: list[int] = field(default_factory=list)
    # Ids sent ahead that went back to the backlog when it retired: it may have claimed one
    # just before it read the Retire.
    handed_on: list[int] = field(default_factory=list)
    callable_path: str = ""
    # Which attempt of its task it runs (leek.states.Claim).
    attempt: int = 0
    task_started_at: float = 0.0
    # The same moment on the wall clock, for people (Unix time).
    task_started_wall: float = 0.0
    tasks_done: int = 0
    last_rss: int = 0
    # The running task's time limit in seconds (None: none).
    timeout: float | None = None
    # Tasks it may run before it is replaced (0: no limit).
    task_quota: int = 0
    # When it was told to retire, and when its last task ended (monotonic; 0: not yet).
    retired_at: float = 0.0
    task_ended_at: float = 0.0
    # Why leek killed it, if it did, and the restart cause that counts it.
    killed_for: str = ""
    kill_kind: str = ""

    def send(self, message: object) -> None:
        """Send a message down its pipe (a dead worker's pipe refuses; its exit tells)."""
        with contextlib.suppress(OSError):
            self.conn.send(message)

    def started(
        self, task_id: int, callable_path: str, timeout: float | None, attempt: int = 0
    ) -> None:
        """Take in that it claimed `task_id` (its attempt `attempt`) and runs it."""
        with contextlib.suppress(ValueError):  # not if it went back to the backlog
            self.queued.remove(task_id)
        with contextlib.suppress(ValueError):  # claimed just before it read Retire
            self.handed_on.remove(task_id)
        self.task_id, self.callable_path, self.attempt = task_id, callable_path, attempt
        self.task_started_at = time.monotonic()
        self.task_started_wall = time.time()
        self.timeout = timeout

    def done(self) -> int | None:
        """Take in that its task ended; return the task's id."""
        task_id, self.task_id, self.callable_path = self.task_id, None, ""
        self.task_ended_at = time.monotonic()
        self.settle()
        return task_id

    def skipped(self, task_ids: tuple[int, ...]) -> list[int]:
        """Take in that it is done with these ids sent ahead and ran none of them.

        Return those it still held; the others went back to the backlog at its retirement.
        """
        held = []
        for task_id in task_ids:
            if task_id in self.queued:
                self.queued.remove(task_id)
                held.append(task_id)
            with contextlib.suppress(ValueError):
                self.handed_on.remove(task_id)
        self.settle()
        return held

    def settle(self) -> None:
        """Go idle once it holds nothing."""
        if self.state is WorkerState.BUSY and not self.load:
            self.state = WorkerState.IDLE

    @property
    def load(self) -> int:
        """Return how many tasks it holds: running and sent ahead."""
        return len(self.queued) + (self.task_id is not None)

    @property
    def pid(self) -> int:
        """Return the worker's pid."""
        return self.process.pid or 0

    def describe_exit(self) -> str:
        """Say how the process ended: its exit code or the signal that killed it."""
        code = self.process.exitcode
        if code is None:
            return "is still running"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"was killed by {name}"
        return f"exited with code {code}"

    def snapshot(self, now: float) -> dict[str, Any]:
        """Return what `stats` shows of this worker."""
        running = self.task_id is not None
        return {
            "pid": self.pid,
            "state": self.state.value,
            "generation": self.generation,
            "task": self.task_id,
            "callable": self.callable_path if running else "",
            "task_since": (
                datetime.fromtimestamp(self.task_started_wall, UTC).isoformat()
                if running
                else None
            ),
            "running_for": round(now - self.task_started_at, 3) if running else None,
            "queued": list(self.queued),
            "handed_on": list(self.handed_on),
            "tasks_done": self.tasks_done,
            "rss_mb": round(self.last_rss / 2**20, 1),
        }
