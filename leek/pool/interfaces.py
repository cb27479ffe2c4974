"""What the supervisor is given by leek.server, as Protocols: the parts it is wired to.

Used by the supervisor and its dispatcher in the server process. The command
(leek.commands.serve) builds leek.server's Backlog, Listener, Sweeper and Heartbeat and hands
them to the Supervisor: leek.pool never imports leek.server, and names here what it uses of
each.
"""

from __future__ import annotations

from typing import Any, Protocol


class Backlog(Protocol):
    """The ids waiting for a worker (leek.server.Backlog)."""

    def take(self, count: int = 1) -> list[int]: ...
    def release(self, task_id: int | None) -> None: ...
    def give_back(self, task_id: int) -> None: ...
    def __len__(self) -> int: ...


class Listener(Protocol):
    """The TCP listener (leek.server.Listener), served from this loop."""

    def fileno(self) -> int: ...
    def serve(self, timeout: float = 0) -> None: ...


class Sweeper(Protocol):
    """The periodic search of the table for READY tasks (leek.server.Sweeper)."""

    failed: bool  # the last sweep met a database error

    def seconds_left(self, now: float) -> float: ...
    def sweep_if_due(self, now: float) -> None: ...
    def wake(self) -> None: ...


class Reporter(Protocol):
    """The writer of the server's row, off the loop (leek.server.Heartbeat)."""

    def fileno(self) -> int: ...  # readable when orders wait
    def report(self, snapshot: dict[str, Any], urgent: bool = False) -> None: ...
    def orders(self) -> list[tuple[int, int, str]]: ...  # (task id, worker pid, by whom)
