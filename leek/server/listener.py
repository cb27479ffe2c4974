"""The TCP listener: one selector, many client connections.

Runs in the server process's main thread, inside the supervisor's loop: the supervisor waits
on the listener's selector (`fileno()`) with everything else and calls `serve()` when a
client has something to say, so a notification reaches the backlog with no thread to wake.
It reads lines (leek.wire), hands announced ids to a callback, and answers `ping` and
`stats`. It must survive any client: garbage gets an error
reply, a line longer than wire.MAX_LINE or a failed `auth` gets the connection closed, a
silent client costs a socket and a small buffer, and past MAX_CONNECTIONS the oldest idle
connection makes room. Nothing a client sends can raise out of `serve()`.
"""

from __future__ import annotations

import logging
import selectors
import socket
import time
from collections.abc import Callable
from typing import Any

from leek import wire
from leek.exceptions import WireError

logger = logging.getLogger("leek.server")

MAX_CONNECTIONS = 2000
RECV_SIZE = 64 * 1024

NotifyCallback = Callable[[str, int, tuple[int, ...]], Any]
StatsCallback = Callable[[], dict[str, Any]]


class _Client:
    """One client connection and what it has sent that is not a whole line yet."""

    __slots__ = ("sock", "buffer", "authed", "nonce", "last_seen")

    def __init__(self, sock: socket.socket, nonce: str) -> None:
        self.sock = sock
        self.buffer = bytearray()
        # The challenge it must answer; "" when the server has no secret, or once answered.
        self.nonce = nonce
        self.authed = not nonce
        self.last_seen = time.monotonic()


class Listener:
    """Accepts clients on `address` and serves the line protocol when asked to."""

    def __init__(
        self,
        address: tuple[str, int],
        on_notify: NotifyCallback,
        stats: StatsCallback,
        secret: str = "",
    ) -> None:
        self.on_notify = on_notify
        self.stats = stats
        self.secret = secret
        self.counters = {"connections": 0, "notifications": 0, "bad_lines": 0, "bad_auths": 0}
        self._server = socket.create_server(address, reuse_port=False, backlog=512)
        self._server.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._server, selectors.EVENT_READ)
        self._clients: dict[int, _Client] = {}

    @property
    def address(self) -> tuple[str, int]:
        """Return the address actually bound (the port is known even when 0 was asked)."""
        host, port = self._server.getsockname()[:2]
        return host, port

    def fileno(self) -> int:
        """Return the selector's fd: readable when a client connects or sends something."""
        return self._selector.fileno()  # epoll and kqueue selectors have one

    def serve(self, timeout: float = 0) -> None:
        """Accept and read what is ready, waiting up to `timeout` s for something to be."""
        for key, _ in self._selector.select(timeout):
            if key.fileobj is self._server:
                self._accept()
            else:
                self._read(key.data)

    def _accept(self) -> None:
        try:
            sock, _ = self._server.accept()
        except BlockingIOError:
            return
        except OSError as exc:  # EMFILE and the like: the next select tries again
            logger.warning("cannot accept a client: %s", exc)
            time.sleep(0.05)
            return
        if len(self._clients) >= MAX_CONNECTIONS:
            self._drop(min(self._clients.values(), key=lambda c: c.last_seen))
        sock.setblocking(False)
        client = _Client(sock, wire.new_nonce() if self.secret else "")
        self._clients[sock.fileno()] = client
        self._selector.register(sock, selectors.EVENT_READ, client)
        self.counters["connections"] += 1
        if client.nonce and not self._reply(client, wire.format_hello(client.nonce)):
            self._drop(client)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self._drop(client)
            return
        client.last_seen = time.monotonic()
        client.buffer += data
        *lines, rest = client.buffer.split(b"\n")
        client.buffer = bytearray(rest)
        for line in lines:
            if not self._handle(client, bytes(line)):
                self._drop(client)
                return
        if len(client.buffer) > wire.MAX_LINE:
            self._reply(client, wire.format_error(f"line longer than {wire.MAX_LINE} bytes"))
            self._drop(client)
        elif not data:  # the client closed its side
            self._drop(client)

    def _handle(self, client: _Client, line: bytes) -> bool:
        """Act on one line; return False to close the connection."""
        if not line.strip():
            return True
        try:
            message = wire.parse(line)
        except WireError as exc:
            self.counters["bad_lines"] += 1
            return self._reply(client, wire.format_error(str(exc)))
        if isinstance(message, wire.Auth):
            # One answer per challenge: a second try on this connection is refused too.
            nonce, client.nonce = client.nonce, ""
            client.authed = bool(nonce) and wire.check_proof(self.secret, nonce, message.proof)
            if not client.authed:
                self.counters["bad_auths"] += 1
                self._reply(client, wire.format_error("bad secret"))
            return client.authed
        if not client.authed:
            self._reply(client, wire.format_error("this server wants 'auth <proof>' first"))
            return False
        if isinstance(message, wire.Notify):
            self.counters["notifications"] += 1
            self.on_notify(message.pool, message.priority, message.ids)
            return True
        if isinstance(message, wire.Ping):
            return self._reply(client, wire.PONG)
        return self._reply(client, wire.format_stats(self._stats()))

    def _stats(self) -> dict[str, Any]:
        try:
            stats = self.stats()
        except Exception as exc:  # noqa: BLE001 - a failing stats reader must not kill us
            logger.exception("stats failed")
            stats = {"error": str(exc)}
        return {**stats, "listener": {**self.counters, "clients": len(self._clients)}}

    def _reply(self, client: _Client, data: bytes) -> bool:
        """Send a reply; return False when the client does not take it (then we hang up)."""
        try:
            sent = client.sock.send(data)
        except OSError:
            return False
        return sent == len(data)

    def _drop(self, client: _Client) -> None:
        fd = client.sock.fileno()
        if self._clients.pop(fd, None) is None:
            return
        self._selector.unregister(client.sock)
        client.sock.close()

    def close(self) -> None:
        """Stop accepting and close every connection."""
        for client in list(self._clients.values()):
            self._drop(client)
        self._selector.close()
        self._server.close()
