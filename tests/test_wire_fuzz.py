"""Fuzzing the wire: 10,000 generated inputs at the parser and at a live server's listener.

The listener must stay up, keep serving real clients, and keep its memory bounded, whatever
it is sent (issue 13, hostile input).
"""

import socket

import psutil
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from leek import wire
from leek.exceptions import WireError
from leek.models import TaskStatus
from tests import tasks
from tests.conftest import KIND, LeekServer

EXAMPLES = 10_000

# The wire knows nothing of the database: one engine's run of the suite fuzzes it.
pytestmark = pytest.mark.skipif(KIND != "sqlite", reason="the wire is fuzzed on the SQLite run")

# Lines that mean something, or nearly: the fuzzer splices them with noise.
WORDS = [
    b"task default 0 1\n",
    b"task default 99999999999999999999 1 2 3\n",
    b"task emails -5 " + b"7 " * 500 + b"\n",
    b"ping\n",
    b"stats\n",
    b"auth 00ff\n",
    b"hello 00ff\n",
    b"\n" * 50,
    b"\r\n",
    b"task",
    b"\xff\xfe\x00",
    "t\u00e2sk d\u00e9fault 0 1\n".encode(),
    b"x" * (wire.MAX_LINE + 10),
]
chunks = st.lists(st.one_of(st.binary(max_size=300), st.sampled_from(WORDS)), max_size=6)


@hypothesis_settings(database=None, deadline=None, max_examples=EXAMPLES)
@given(st.one_of(st.binary(max_size=400), chunks.map(b"".join)))
def test_the_parser_takes_any_bytes(data):
    try:
        message = wire.parse(data)
    except WireError:
        return
    assert isinstance(message, wire.Auth | wire.Notify | wire.Ping | wire.Stats)


def read_to_end(sock):
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def test_a_live_listener_takes_10000_inputs_and_stays_up_and_small():
    server = LeekServer(["--workers", "1", "--bind", "127.0.0.1:0"])
    try:
        server.wait_workers(1)
        address = ("127.0.0.1", server.port)
        process = psutil.Process(server.pid)
        rss_before = process.memory_info().rss

        @hypothesis_settings(
            database=None,
            deadline=None,
            max_examples=EXAMPLES,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(chunks)
        def send(parts):
            with socket.create_connection(address, timeout=10) as sock:
                for part in parts:
                    try:
                        sock.sendall(part)
                    except (BrokenPipeError, ConnectionResetError):
                        break  # the server hung up on an earlier part: its right
                # Half-close and read until the server closes: it has handled all of it.
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    return
                read_to_end(sock)

        send()
        assert server.proc.poll() is None, server.log()
        assert server.request(wire.PING) == wire.PONG
        stats = server.stats()
        assert stats["listener"]["connections"] >= EXAMPLES
        assert stats["listener"]["clients"] <= 1  # the one asking: the others were let go
        growth = process.memory_info().rss - rss_before
        assert growth < 32 * 2**20, f"the server grew by {growth / 2**20:.1f} MB"
        from django.test import override_settings

        with override_settings(LEEK={"host": "127.0.0.1", "port": server.port}):
            handle = tasks.add.offload(2, 3)
            assert handle.wait(60).status == TaskStatus.SUCCESSFUL
        assert handle.return_value == 5
    finally:
        server.stop()
