"""Signals as data: handlers that do nothing, and a socket the supervisor's wait() watches.

Used by the supervisor in the server process's main thread. A handler that logs or takes a
lock can deadlock the process it interrupts; these only let `signal.set_wakeup_fd` write the
signal number to a socket, and the loop reads the names and acts on them.
"""

from __future__ import annotations

import signal
import socket
from typing import Any

HANDLED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGTTIN", "SIGTTOU", "SIGUSR1")


def _noop(signum: int, frame: Any) -> None:
    """Do nothing: the wake-up fd carries the signal to the loop."""


class SignalSocket:
    """Delivers the HANDLED signals to whoever waits on `fileno()`."""

    def __init__(self) -> None:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._old_fd = -1

    def fileno(self) -> int:
        """Return the fd that becomes readable when a signal arrived."""
        return self._read.fileno()

    def install(self) -> None:
        """Route the signals here."""
        self._old_fd = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        for name in HANDLED:
            signal.signal(getattr(signal, name), _noop)

    def restore(self) -> None:
        """Give the signals back their default handling."""
        for name in HANDLED:
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        signal.set_wakeup_fd(self._old_fd)

    def read(self) -> list[str]:
        """Return the names of the signals that arrived, oldest first ("term", "hup", ...)."""
        try:
            data = self._read.recv(256)
        except BlockingIOError:
            return []
        return [signal.Signals(number).name[3:].lower() for number in data]
