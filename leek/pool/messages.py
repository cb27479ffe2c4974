"""The messages between the supervisor and a worker, each over the worker's own pipe.

Sent by the worker process (Booted, Started, Recording, Finished, Skipped), a tuple of them in one
write, and by the supervisor in the server process (Run, Retire). One writer per pipe end,
so a dying worker cannot garble anybody else's channel. Plain frozen dataclasses: without
slots they pickle in C, several times faster, and a few go by for every task.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Booted:
    """The worker ran django.setup() and waits for work."""

    pid: int


@dataclass(frozen=True)
class Started:
    """The worker claimed the task and is running it."""

    task_id: int
    callable_path: str
    timeout: float | None = None
    # Which attempt of the task it is (the fencing token of the claim).
    attempt: int = 0


@dataclass(frozen=True)
class Recording:
    """The task has run, and its outcome waits for the database: its time limit is over.

    Sent only when the database failed the first write of the outcome.
    """

    task_id: int


@dataclass(frozen=True)
class Finished:
    """The task's outcome is recorded (SUCCESSFUL, FAILED, or READY for a retry) or dropped."""

    task_id: int
    callable_path: str
    status: str
    duration: float
    error: str = ""
    # It ran under a limit key: another task of the key may start now.
    limited: bool = False
    # The row had moved on (settled by a server that took this worker for lost): the
    # outcome was dropped, not written.
    discarded: bool = False


@dataclass(frozen=True)
class Skipped:
    """The worker is done with these ids and ran none of them since its last message.

    Either they were not there to claim (taken, or no longer due), or `error` says how the
    database failed their claim.
    """

    task_ids: tuple[int, ...]
    error: str = ""


@dataclass(frozen=True)
class Run:
    """Claim and run these tasks, in this order, after those already sent."""

    task_ids: tuple[int, ...]


@dataclass(frozen=True)
class Retire:
    """Exit once the current task (if any) is done."""


WorkerMessage = Booted | Started | Recording | Finished | Skipped
