"""The values a task row holds: its status, encodings and operator actions, the record of one
attempt, and the claim that fences every write ending an attempt.

Plain values, imported by every process that reads or writes tasks: the web process, the
server and the workers. leek.models re-exports the choices its fields use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import models


class TaskStatus(models.TextChoices):
    """The life of a task; the values are those of Django's Tasks framework."""

    # Saved and waiting for a worker (or for its run_after).
    READY = "READY"
    # Claimed by a worker, which is running it.
    RUNNING = "RUNNING"
    # Ran to the end; return_value holds what it returned.
    SUCCESSFUL = "SUCCESSFUL"
    # Raised, could not be loaded, or lost its worker; the error fields say why.
    FAILED = "FAILED"


class Encoding(models.TextChoices):
    """How a row's payload and result are encoded."""

    # (callable, args, kwargs) pickled; `.offload()`.
    PICKLE = "pickle"
    # {"args": [...], "kwargs": {...}} as JSON, callable_path names a django.tasks Task;
    # the Django Tasks backend (leek.backend).
    JSON = "json"


class ControlAction(models.TextChoices):
    """What an operator last did to a task (leek.control)."""

    # Ran a FAILED task again.
    RETRY = "retry"
    # Stopped a READY task before it started.
    CANCEL = "cancel"
    # Asked the server holding a RUNNING task to kill its worker.
    TERMINATE = "terminate"


# The error class paths of the tasks an operator stopped.
CANCELLED = "leek.exceptions.Cancelled"
TERMINATED = "leek.exceptions.Terminated"
# The class path a snooze is recorded with in a task's history.
SNOOZED = "leek.exceptions.Snooze"


class UniqueUntil(models.TextChoices):
    """How long a task's unique_key keeps another offload with the same key from saving."""

    # While it is READY: once it starts, the same call may be queued again.
    START = "start"
    # While it is READY or RUNNING.
    END = "end"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One run of a task: when, on which worker, and how it ended ("" when it succeeded)."""

    started_at: datetime | None
    finished_at: datetime | None
    # "host:pid" of the worker process.
    worker: str
    exception_class_path: str = ""
    traceback: str = ""

    def to_json(self) -> dict[str, Any]:
        """Return the attempt as a `Task.history` entry."""
        return {
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "worker": self.worker,
            "exception_class_path": self.exception_class_path,
            "traceback": self.traceback,
        }

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> Attempt:
        """Read a `Task.history` entry."""
        return cls(
            started_at=_datetime(entry.get("started_at")),
            finished_at=_datetime(entry.get("finished_at")),
            worker=entry.get("worker", ""),
            exception_class_path=entry.get("exception_class_path", ""),
            traceback=entry.get("traceback", ""),
        )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _datetime(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True, slots=True)
class Claim:
    """Whose a RUNNING row is: a worker `pid` on `host`, at attempt `attempt`.

    Every write that ends an attempt names the claim it ends, and changes nothing when the
    row has moved on. The attempt is the fencing token: a worker on a server that was cut
    off, whose task another server settled and a worker on another host (which may have the
    same pid) claimed again, cannot overwrite that new attempt with its late outcome
    (issue 13). An attempt of 0 matches any (a claim read back from the row itself).
    """

    pid: int
    host: str
    attempt: int = 0

    def of(self, rows: models.QuerySet, task_id: int) -> models.QuerySet:
        """Return the row `task_id` among `rows` if it is still RUNNING under this claim."""
        mine = rows.filter(
            id=task_id, status=TaskStatus.RUNNING, worker_pid=self.pid, worker_host=self.host
        )
        return mine.filter(attempts=self.attempt) if self.attempt else mine
