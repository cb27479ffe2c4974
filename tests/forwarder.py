"""A TCP forwarder to the test database server, to cut a server off its database.

It listens on loopback, or on the address `bind` names (a veth end, for a server in a
network namespace).
"""

import contextlib
import os
import socket
import threading
import time

# The settings variables (tests/settings.py) and the default port of each server database.
_TARGETS = {"postgres": ("LEEK_TEST_PG", "5432"), "mariadb": ("LEEK_TEST_MY", "3306")}


class Forwarder:
    """TCP to PostgreSQL or MariaDB from a socket of its own, in threads.

    Until `start()`, its port is bound but not listening: connections to it are refused.
    """

    def __init__(self, bind="127.0.0.1"):
        # Until then, a new connection is closed at once, as a restarting database does.
        self.refuse_until = 0.0
        self.listener = socket.socket()
        self.listener.bind((bind, 0))
        self.port = self.listener.getsockname()[1]
        prefix, port = _TARGETS[os.environ.get("LEEK_TEST_DB", "sqlite")]
        self.target = (
            os.environ.get(f"{prefix}HOST", "127.0.0.1"),
            int(os.environ.get(f"{prefix}PORT", port)),
        )
        # What a server sent through it needs to reach the database.
        self.env = {f"{prefix}HOST": bind, f"{prefix}PORT": str(self.port)}
        self.sockets = []
        self.lock = threading.Lock()
        self.closed = False

    def start(self):
        self.listener.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
                if time.monotonic() < self.refuse_until:
                    client.close()
                    continue
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                if self.closed:
                    return
                continue
            with self.lock:
                if self.closed:
                    client.close()
                    upstream.close()
                    return
                self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self, seconds):
        """Drop every connection, and refuse new ones for `seconds`: a database restart."""
        with self.lock:
            self.refuse_until = time.monotonic() + seconds
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets = []

    def close(self):
        with self.lock:
            self.closed = True
            # shutdown() wakes the accept() blocked in the thread; close() alone would not.
            for sock in [self.listener, *self.sockets]:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
