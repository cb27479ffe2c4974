"""The messages between the supervisor and a worker, each over the worker's own pipe.

Sent by the worker process (Booted, Started, Finished, Skipped) and by the supervisor in the
server process (Run, Retire). One writer per pipe end, so a dying worker cannot garble
anybody else's channel.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Booted:
    """The worker ran django.setup() and waits for work."""

    pid: int


@dataclass(frozen=True, slots=True)
class Started:
    """The worker claimed the task and is running it."""

    task_id: int
    callable_path: str
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Finished:
    """The task's outcome is recorded: SUCCESSFUL, FAILED, or READY for a retry."""

    task_id: int
    callable_path: str
    status: str
    duration: float
    error: str = ""


@dataclass(frozen=True, slots=True)
class Skipped:
    """The task was not there to claim (taken, or no longer due); nothing ran.

    `error` is set when the database failed the worker instead.
    """

    task_id: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class Run:
    """Claim and run this task."""

    task_id: int


@dataclass(frozen=True, slots=True)
class Retire:
    """Exit once the current task (if any) is done."""


WorkerMessage = Booted | Started | Finished | Skipped
