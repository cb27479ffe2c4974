"""The line protocol between web processes and the leek server, as pure functions (no I/O).

Used by the client (web process) to format and by the listener (server process) to parse.
One message a line, UTF-8, ending in b"\\n", at most MAX_LINE bytes:

    auth <secret>                       first line, when the server has a secret; no reply
    task <pool> <priority> <id> ...     these tasks were committed; no reply
    ping                                -> pong
    stats                               -> stats <JSON object>
    (anything wrong)                    -> error <reason>   (then, for auth, a close)

Only ids and control words travel; never a pickle.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from leek.exceptions import WireError

MAX_LINE = 64 * 1024
# Ids per notification line, so that a bulk offload stays well under MAX_LINE.
IDS_PER_LINE = 2000


@dataclass(frozen=True, slots=True)
class Auth:
    """The client presents the shared secret."""

    secret: str


@dataclass(frozen=True, slots=True)
class Notify:
    """Tasks of one pool and priority were committed and are READY."""

    pool: str
    priority: int
    ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Ping:
    """Ask whether the server is alive."""


@dataclass(frozen=True, slots=True)
class Stats:
    """Ask for the server's counters and workers."""


Message = Auth | Notify | Ping | Stats


def parse(line: bytes) -> Message:
    """Parse one line (without its newline) into a message, or raise `WireError`."""
    try:
        text = line.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise WireError("not UTF-8") from exc
    word, _, rest = text.partition(" ")
    if word == "task":
        return _parse_notify(rest.split())
    if word == "auth" and rest:
        return Auth(rest)
    if word == "ping" and not rest:
        return Ping()
    if word == "stats" and not rest:
        return Stats()
    raise WireError(f"unknown message {text[:40]!r}")


def _parse_notify(fields: list[str]) -> Notify:
    if len(fields) < 3:
        raise WireError("task needs a pool, a priority and at least one id")
    pool, priority, *ids = fields
    try:
        return Notify(pool, int(priority), tuple(_task_id(i) for i in ids))
    except ValueError as exc:
        raise WireError(f"task: {exc}") from exc


def _task_id(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{text[:20]!r} is not a task id")
    return int(text)


def format_notify(pool: str, priority: int, ids: Iterable[int]) -> Iterator[bytes]:
    """Yield the notification lines for these ids, IDS_PER_LINE at a time."""
    ids = list(ids)
    for start in range(0, len(ids), IDS_PER_LINE):
        chunk = " ".join(map(str, ids[start : start + IDS_PER_LINE]))
        yield f"task {pool} {priority:d} {chunk}\n".encode()


def format_auth(secret: str) -> bytes:
    """Return the line that presents the shared secret."""
    return f"auth {secret}\n".encode()


PING = b"ping\n"
PONG = b"pong\n"
STATS = b"stats\n"


def format_stats(stats: dict[str, Any]) -> bytes:
    """Return the reply to `stats`."""
    return b"stats " + json.dumps(stats, default=str, separators=(",", ":")).encode() + b"\n"


def parse_stats(line: bytes) -> dict[str, Any]:
    """Parse a reply to `stats` into its object."""
    word, _, body = line.partition(b" ")
    if word != b"stats":
        raise WireError(f"expected a stats reply, got {line[:60]!r}")
    return json.loads(body)


def format_error(reason: str) -> bytes:
    """Return an error reply."""
    return f"error {reason}\n".encode()
