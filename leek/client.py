"""The web side of the wire: tell the server which tasks were committed; never raise.

Runs in web processes (and anything else that offloads). Each process keeps one persistent
connection, shared by its threads under a lock, and makes a new one after a fork or when the
server went away. When the server cannot be reached the task stays READY in the database and
the server's sweep runs it later, so a notification that fails only logs a warning.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from collections.abc import Iterable

from leek import conf, wire
from leek.exceptions import WireError

logger = logging.getLogger("leek.client")

# After a failed connect, offloads skip the server for this long instead of each waiting for
# its own timeout; their tasks are swept.
RETRY_AFTER = 1.0


class Notifier:
    """One persistent connection to the leek server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._pid = os.getpid()
        self._address: tuple[str, int, str] | None = None
        self._down_until = 0.0

    def notify(self, pool: str, priority: int, ids: Iterable[int]) -> bool:
        """Send the ids; return whether the server got them (a failure only logs a warning)."""
        ids = list(ids)
        settings = conf.get()
        lines = b"".join(wire.format_notify(pool, priority, ids))
        with self._lock:
            try:
                sock = self._connection(settings)
                if sock is None:
                    return False
                sock.sendall(lines)
            except OSError as exc:
                self._close()
                self._down_until = time.monotonic() + RETRY_AFTER
                logger.warning(
                    "leek server at %s:%s unreachable (%s); task %s stays READY and runs "
                    "when the server next sweeps",
                    settings.host,
                    settings.port,
                    exc,
                    _describe(ids),
                )
                return False
        return True

    def _connection(self, settings: conf.Settings) -> socket.socket | None:
        address = (settings.host, settings.port, settings.secret)
        if self._pid != os.getpid() or self._address != address:
            # Never share a socket across a fork, nor keep one to an old address.
            self._sock = None
            self._pid = os.getpid()
            self._address = address
            self._down_until = 0.0
        if self._sock is not None and not self._still_open(self._sock):
            self._close()
        if self._sock is None:
            if time.monotonic() < self._down_until:
                return None
            self._sock = self._connect(settings)
        return self._sock

    @staticmethod
    def _connect(settings: conf.Settings) -> socket.socket:
        sock = socket.create_connection(
            (settings.host, settings.port), timeout=settings.connect_timeout
        )
        sock.settimeout(settings.send_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            handshake(sock, settings.secret)
        except OSError:
            sock.close()
            raise
        return sock

    @staticmethod
    def _still_open(sock: socket.socket) -> bool:
        """Tell whether the server kept the connection: it only ever writes to say goodbye."""
        poller = select.poll()  # not select(): a web process may hold more than 1024 fds
        poller.register(sock, select.POLLIN)
        if not poller.poll(0):
            return True
        try:
            said = sock.recv(wire.MAX_LINE)
        except OSError:
            return False
        if said:
            logger.warning("leek server says: %s", said.decode("utf-8", "replace").strip())
        return False

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def handshake(sock: socket.socket, secret: str) -> None:
    """Answer the server's challenge when there is a secret (raise OSError if it fails).

    The secret itself never goes on the wire: only its HMAC of the server's fresh nonce.
    """
    if not secret:
        return
    try:
        nonce = wire.parse_hello(read_line(sock))
    except WireError as exc:
        raise ConnectionError(f"{exc}; does the server have LEEK['secret'] set?") from exc
    sock.sendall(wire.format_auth(secret, nonce))


def read_line(sock: socket.socket) -> bytes:
    """Read one reply line (b"" when the server closed without one)."""
    reply = b""
    while not reply.endswith(b"\n") and len(reply) <= wire.MAX_LINE:
        chunk = sock.recv(wire.MAX_LINE)
        if not chunk:
            break
        reply += chunk
    return reply


def request(host: str, port: int, line: bytes, timeout: float = 2.0, secret: str = "") -> bytes:
    """Send one line (`wire.PING`, `wire.STATS`) on a new connection; return the reply line.

    For health checks and status tools; b"" when the server closed without a reply.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        handshake(sock, secret)
        sock.sendall(line)
        return read_line(sock)


def announce(
    address: tuple[str, int], secret: str, pool: str, priority: int, ids: list[int]
) -> None:
    """Tell the server at `address` of READY ids, on a connection of their own.

    For a server telling its own listener (its scheduler thread). Raises OSError when the
    server cannot be reached.
    """
    host, port = address
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    settings = conf.get()
    with socket.create_connection((host, port), timeout=settings.connect_timeout) as sock:
        sock.settimeout(settings.send_timeout)
        handshake(sock, secret)
        sock.sendall(b"".join(wire.format_notify(pool, priority, ids)))


def _describe(ids: list[int]) -> str:
    if len(ids) == 1:
        return str(ids[0])
    return f"{ids[0]} (and {len(ids) - 1} more)"


_notifier = Notifier()


def notify(pool: str, priority: int, ids: Iterable[int]) -> bool:
    """Tell the server these committed tasks are READY."""
    return _notifier.notify(pool, priority, ids)
