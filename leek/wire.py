"""The line protocol between web processes and the leek server, as pure functions (no I/O).

Used by the client (web process) to format and by the listener (server process) to parse.
One message a line, UTF-8, ending in b"\\n", at most MAX_LINE bytes:

    hello <nonce>                       server's first line, when it has a secret
    auth <proof>                        client's answer: HMAC-SHA256(secret, nonce); no reply
    task <pool> <priority> <id> ...     these tasks were committed; no reply
    ping                                -> pong
    stats                               -> stats <JSON object>
    (anything wrong)                    -> error <reason>   (then, for auth, a close)

Only ids and control words travel; never a pickle, and never the secret: a server with a
secret opens each connection with a fresh random nonce, and the client proves it knows the
secret by the nonce's HMAC. A proof is good for its own connection only, so one recorded
on the network cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from leek.exceptions import WireError

MAX_LINE = 64 * 1024
# Ids per notification line, so that a bulk offload stays well under MAX_LINE.
IDS_PER_LINE = 2000


@dataclass(frozen=True, slots=True)
class Auth:
    """The client proves it knows the shared secret (`proof(secret, nonce)`)."""

    proof: str


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


# Digits of the largest id a task row can have (a 64-bit primary key), less one: a longer
# number is no task, and the database drivers refuse it with an error of their own.
MAX_ID_DIGITS = 18


def _task_id(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_ID_DIGITS:
        raise ValueError(f"{text[:20]!r} is not a task id")
    return int(text)


def format_notify(pool: str, priority: int, ids: Iterable[int]) -> Iterator[bytes]:
    """Yield the notification lines for these ids, IDS_PER_LINE at a time."""
    ids = list(ids)
    for start in range(0, len(ids), IDS_PER_LINE):
        chunk = " ".join(map(str, ids[start : start + IDS_PER_LINE]))
        yield f"task {pool} {priority:d} {chunk}\n".encode()


def new_nonce() -> str:
    """Return a fresh random challenge for one connection."""
    return secrets.token_hex(16)


def format_hello(nonce: str) -> bytes:
    """Return the server's first line on a connection, carrying its challenge."""
    return f"hello {nonce}\n".encode()


def parse_hello(line: bytes) -> str:
    """Return the nonce of the server's first line, or raise `WireError`."""
    word, _, nonce = line.strip().partition(b" ")
    if word != b"hello" or not nonce:
        raise WireError(f"expected the server's hello, got {line[:60]!r}")
    return nonce.decode("ascii", "replace")


def proof(secret: str, nonce: str) -> str:
    """Return the answer to `nonce` that only a holder of `secret` can give."""
    return hmac.new(secret.encode(), b"leek auth " + nonce.encode(), hashlib.sha256).hexdigest()


def check_proof(secret: str, nonce: str, given: str) -> bool:
    """Tell whether `given` answers `nonce` for `secret` (in constant time)."""
    return hmac.compare_digest(given.encode(), proof(secret, nonce).encode())


def format_auth(secret: str, nonce: str) -> bytes:
    """Return the line that answers the server's challenge `nonce`."""
    return f"auth {proof(secret, nonce)}\n".encode()


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
