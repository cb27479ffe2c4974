"""The listener: the line protocol against a real server, and the Listener class in-process."""

import contextlib
import queue
import socket
import threading
from datetime import timedelta

import psutil
import pytest
from django.test import override_settings
from django.utils import timezone

from leek import client, conf, serialize, wire
from leek.models import Task, TaskStatus
from leek.server import listener as listener_module
from leek.server.listener import Listener
from tests import tasks
from tests.conftest import LeekServer, wait_until
from tests.models import Row

TIMEOUT = 30.0


@pytest.fixture(scope="module")
def server():
    """One real server for the tests of this module (a server takes seconds to start)."""
    leek_server = LeekServer(["--workers", "1", "--bind", "127.0.0.1:0"])
    try:
        leek_server.wait_workers(1)
        yield leek_server
    finally:
        leek_server.stop()


@pytest.fixture
def leek_settings():
    """Return a function that changes settings.LEEK until the end of the test.

    Through override_settings(LEEK=...), which sends `setting_changed`, so that leek.conf
    drops its cached value on the way in and on the way out.
    """
    with contextlib.ExitStack() as stack:

        def change(**changes):
            from django.conf import settings

            stack.enter_context(override_settings(LEEK={**settings.LEEK, **changes}))

        yield change


@pytest.fixture
def live(server, leek_settings):
    """The module's server, with this process's client pointed at it."""
    assert server.proc.poll() is None, f"the server died:\n{server.log()}"
    leek_settings(host="127.0.0.1", port=server.port)
    assert conf.get().port == server.port
    return server


def connect(port, timeout=TIMEOUT):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_line(sock):
    """Read one reply line; b"" if the server closed the connection first."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def read_to_end(sock):
    """Read until the server closes; return what it sent (a reset counts as a close)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def ping_ok(port):
    with connect(port) as sock:
        sock.sendall(wire.PING)
        return read_line(sock) == wire.PONG


def rss(pid):
    return psutil.Process(pid).memory_info().rss


# --- the protocol against a real server ----------------------------------------------------


def test_ping(live):
    assert live.request(b"ping\n") == b"pong\n"


def test_stats_shows_workers_counts_and_queue(live):
    tasks.add.offload(1, 2).wait(TIMEOUT)

    def counted():
        stats = live.stats()
        return stats["counts"]["done"] >= 1 and stats

    stats = wait_until(counted, TIMEOUT, "the finished task in the stats")
    assert isinstance(stats["queued"], int)
    assert stats["queued"] >= 0
    workers = stats["workers"]
    assert len(workers) == 1
    worker = workers[0]
    assert {"pid", "state", "task", "tasks_done", "generation", "rss_mb"} <= set(worker)
    assert worker["pid"] in live.worker_pids()
    assert worker["state"] in ("idle", "busy")
    assert worker["tasks_done"] >= 1
    assert worker["generation"] >= 1
    assert worker["rss_mb"] >= 0
    assert stats["listener"]["connections"] >= 1


def test_stats_ready_counts_the_backlog_nobody_announced(live):
    # Counted by the server's heartbeat thread at each beat, never by the loop that answers.
    wait_until(lambda: live.stats()["ready"] == 0, 30, "the count of an empty table")
    payload = serialize.dumps_call(tasks.add, (1, 2), {})
    later = timezone.now() + timedelta(hours=1)
    for _ in range(3):
        Task.objects.create(callable_path="tests.tasks.add", payload=payload, run_after=later)
    wait_until(lambda: live.stats()["ready"] == 3, 30, "the count of three READY tasks")
    assert set(Task.objects.values_list("status", flat=True)) == {TaskStatus.READY}


def test_garbage_gets_an_error_and_the_connection_still_answers(live):
    bad_before = live.stats()["listener"]["bad_lines"]
    with connect(live.port) as sock:
        sock.sendall(b"hello there\n")
        assert read_line(sock).startswith(b"error ")
        sock.sendall(b"task default zero 1\n")
        assert read_line(sock).startswith(b"error ")
        sock.sendall(b"ping\n")
        assert read_line(sock) == wire.PONG
    assert live.stats()["listener"]["bad_lines"] >= bad_before + 2


def test_non_utf8_gets_an_error_and_the_connection_still_answers(live):
    with connect(live.port) as sock:
        sock.sendall(b"\xff\xfe\xfd task\n")
        reply = read_line(sock)
        assert reply.startswith(b"error ")
        assert b"UTF-8" in reply
        sock.sendall(b"ping\n")
        assert read_line(sock) == wire.PONG


def test_lines_split_and_joined_across_packets(live):
    with connect(live.port) as sock:
        sock.sendall(b"pi")
        sock.sendall(b"ng\n")
        assert read_line(sock) == wire.PONG
        sock.sendall(b"ping\nping\n")
        assert read_line(sock) + read_line(sock) == wire.PONG * 2


def test_a_line_just_too_long_gets_an_error_and_a_close(live):
    with connect(live.port) as sock:
        sock.sendall(b"x" * (wire.MAX_LINE + 1))
        said = read_to_end(sock)
    assert said.startswith(b"error ")
    assert b"longer" in said
    assert ping_ok(live.port)


def test_an_8mb_line_gets_the_connection_closed_and_the_server_keeps_serving(live):
    before = rss(live.pid)
    with connect(live.port) as sock:
        block = b"y" * 65536
        try:
            for _ in range(8 * 16):  # 8 MB, no newline
                sock.sendall(block)
        except OSError:
            pass  # the server hung up while we were still sending: that is the point
        said = read_to_end(sock)  # returns only once the server has closed
    assert said == b"" or said.startswith(b"error ")
    assert ping_ok(live.port)
    assert live.proc.poll() is None
    assert rss(live.pid) - before < 60 * 2**20


def test_a_client_that_never_speaks_costs_nobody_anything(live):
    with connect(live.port) as silent:
        for _ in range(3):
            assert ping_ok(live.port)
        tasks.add.offload(2, 2).wait(TIMEOUT)
        # The silent client was kept; it may still speak.
        silent.sendall(b"ping\n")
        assert read_line(silent) == wire.PONG


def test_half_closed_socket_gets_its_pong_then_eof(live):
    with connect(live.port) as sock:
        sock.sendall(b"ping\n")
        sock.shutdown(socket.SHUT_WR)
        assert read_line(sock) == wire.PONG
        assert sock.recv(100) == b""


def test_300_idle_connections_while_a_task_runs(live):
    before = rss(live.pid)
    clients_before = live.stats()["listener"]["clients"]
    with contextlib.ExitStack() as stack:
        for _ in range(300):
            stack.enter_context(connect(live.port))
        wait_until(
            lambda: live.stats()["listener"]["clients"] >= clients_before + 300,
            TIMEOUT,
            "300 accepted connections",
        )
        handle = tasks.add.offload(1, 2).wait(TIMEOUT)
        assert handle.return_value == 3
        assert ping_ok(live.port)
        assert rss(live.pid) - before < 60 * 2**20
    wait_until(
        lambda: live.stats()["listener"]["clients"] <= clients_before + 1,
        TIMEOUT,
        "the closed connections to be dropped",
    )


def test_the_same_id_delivered_many_times_runs_once(live):
    payload = serialize.dumps_call(tasks.write_row, (1,), {})
    by_hand = Task.objects.create(callable_path="tests.tasks.write_row", payload=payload)
    offloaded = tasks.write_row.offload(2)
    line = b"".join(
        b"".join(wire.format_notify("default", 0, [by_hand.pk, offloaded.id])) for _ in range(5)
    )
    with connect(live.port) as sock:
        sock.sendall(line)
        sock.sendall(b"ping\n")
        assert read_line(sock) == wire.PONG
    for _ in range(5):
        with connect(live.port) as sock:
            sock.sendall(b"".join(wire.format_notify("default", 0, [by_hand.pk, offloaded.id])))
    for task_id in (by_hand.pk, offloaded.id):
        wait_until(
            lambda task_id=task_id: Task.objects.get(pk=task_id).is_finished,
            TIMEOUT,
            f"task {task_id} to finish",
        )
    # Deliver them again after they ran, then wait for a later task: the worker has gone
    # through every id queued before it.
    with connect(live.port) as sock:
        sock.sendall(b"".join(wire.format_notify("default", 0, [by_hand.pk, offloaded.id])))
        sock.sendall(b"ping\n")
        assert read_line(sock) == wire.PONG
    tasks.write_row.offload(3).wait(TIMEOUT)
    assert Row.objects.filter(n=1).count() == 1
    assert Row.objects.filter(n=2).count() == 1
    for task_id in (by_hand.pk, offloaded.id):
        row = Task.objects.get(pk=task_id)
        assert row.status == TaskStatus.SUCCESSFUL
        assert row.attempts == 1


# --- the Listener class in this process -----------------------------------------------------


@pytest.fixture
def make_listener():
    """Return a function that serves a Listener on a free port in a thread of its own (the
    server serves it from the supervisor's loop); all are stopped afterwards."""
    started = []

    def make(secret="", stats=dict):
        notified = queue.Queue()
        listener = Listener(
            ("127.0.0.1", 0),
            on_notify=lambda pool, priority, ids: notified.put((pool, priority, ids)),
            stats=stats,
            secret=secret,
        )
        stop = threading.Event()
        thread = threading.Thread(target=_serve_until, args=(listener, stop), daemon=True)
        thread.start()
        started.append((listener, stop, thread))
        return listener, notified

    yield make
    for listener, stop, thread in started:
        stop.set()
        thread.join(5)
        listener.close()


def _serve_until(listener, stop):
    while not stop.is_set():
        listener.serve(0.05)


def test_listener_hands_notifications_to_the_callback(make_listener):
    listener, notified = make_listener()
    port = listener.address[1]
    assert port != 0
    with connect(port) as sock:
        sock.sendall(b"task default 0 5 6 7\ntask emails 3 8\n")
        sock.sendall(b"ping\n")
        assert read_line(sock) == wire.PONG
    assert notified.get(timeout=TIMEOUT) == ("default", 0, (5, 6, 7))
    assert notified.get(timeout=TIMEOUT) == ("emails", 3, (8,))
    assert notified.empty()
    assert listener.counters["notifications"] == 2


def test_listener_stats_reply_and_a_failing_stats_reader(make_listener):
    listener, _ = make_listener(stats=lambda: {"queued": 4})
    with connect(listener.address[1]) as sock:
        sock.sendall(wire.STATS)
        stats = wire.parse_stats(read_line(sock).strip())
    assert stats["queued"] == 4
    assert stats["listener"]["clients"] == 1

    def broken():
        raise RuntimeError("no stats today")

    listener, _ = make_listener(stats=broken)
    with connect(listener.address[1]) as sock:
        sock.sendall(wire.STATS)
        stats = wire.parse_stats(read_line(sock).strip())
        assert "no stats today" in stats["error"]
        sock.sendall(wire.PING)
        assert read_line(sock) == wire.PONG


def hello(sock):
    """Read the server's challenge."""
    return wire.parse_hello(read_line(sock))


def test_listener_with_a_secret_refuses_a_task_without_auth(make_listener):
    listener, notified = make_listener(secret="s3cret")
    with connect(listener.address[1]) as sock:
        hello(sock)
        sock.sendall(b"task default 0 1\n")
        said = read_to_end(sock)
    assert said.startswith(b"error ")
    assert b"auth" in said
    assert notified.empty()


def test_listener_with_a_secret_takes_tasks_after_auth(make_listener):
    listener, notified = make_listener(secret="s3cret")
    with connect(listener.address[1]) as sock:
        nonce = hello(sock)
        sock.sendall(wire.format_auth("s3cret", nonce) + b"task default 2 11 12\n" + wire.PING)
        assert read_line(sock) == wire.PONG
    assert notified.get(timeout=TIMEOUT) == ("default", 2, (11, 12))


def test_listener_with_a_secret_refuses_a_wrong_one(make_listener):
    listener, notified = make_listener(secret="s3cret")
    with connect(listener.address[1]) as sock:
        nonce = hello(sock)
        sock.sendall(wire.format_auth("wrong", nonce) + b"task default 0 1\n")
        said = read_to_end(sock)
    assert said.startswith(b"error ")
    assert b"secret" in said
    assert said.count(b"\n") == 1  # the task line after the bad auth was not read
    assert notified.empty()
    assert listener.counters["bad_auths"] == 1
    # The listener itself is fine.
    with connect(listener.address[1]) as sock:
        sock.sendall(wire.format_auth("s3cret", hello(sock)) + wire.PING)
        assert read_line(sock) == wire.PONG


def test_listener_refuses_a_replayed_proof_and_a_second_try(make_listener):
    listener, notified = make_listener(secret="s3cret")
    with connect(listener.address[1]) as sock:
        recorded = wire.format_auth("s3cret", hello(sock))
        sock.sendall(recorded + wire.PING)
        assert read_line(sock) == wire.PONG
    with connect(listener.address[1]) as sock:
        hello(sock)
        sock.sendall(recorded + b"task default 0 1\n")
        assert read_to_end(sock).startswith(b"error bad secret")
    # A wrong answer is not followed by a second chance on the same challenge.
    with connect(listener.address[1]) as sock:
        nonce = hello(sock)
        sock.sendall(wire.format_auth("wrong", nonce) + wire.format_auth("s3cret", nonce))
        assert read_to_end(sock).count(b"\n") == 1
    assert notified.empty()
    assert listener.counters["bad_auths"] == 2


def test_the_client_refuses_a_server_that_sends_no_challenge(make_listener, leek_settings):
    listener, notified = make_listener()  # no secret: it sends no hello
    leek_settings(host="127.0.0.1", port=listener.address[1], secret="s3cret", send_timeout=0.3)
    notifier = client.Notifier()
    try:
        assert not notifier.notify("default", 1, [21])
    finally:
        notifier._close()
    assert notified.empty()


def test_the_client_presents_the_secret(make_listener, leek_settings):
    listener, notified = make_listener(secret="s3cret")
    leek_settings(host="127.0.0.1", port=listener.address[1], secret="s3cret")
    notifier = client.Notifier()  # a fresh one: not in the back-off of an earlier failure
    try:
        assert notifier.notify("default", 1, [21, 22])
        assert notified.get(timeout=TIMEOUT) == ("default", 1, (21, 22))
    finally:
        notifier._close()


def test_listener_survives_many_clients_coming_and_going(make_listener):
    listener, notified = make_listener()
    port = listener.address[1]
    errors = []

    def chatter(n):
        try:
            for _ in range(10):
                with connect(port) as sock:
                    sock.sendall(f"task default 0 {n}\n".encode() + b"garbage\n" + wire.PING)
                    if read_line(sock) == b"":
                        errors.append("closed")
        except OSError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=chatter, args=(n,)) for n in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert errors == []
    got = [notified.get(timeout=TIMEOUT) for _ in range(80)]
    assert sorted(ids[0] for _, _, ids in got) == sorted(n for n in range(1, 9) for _ in range(10))
    assert ping_ok(port)


def test_past_the_connection_limit_the_oldest_idle_client_makes_room(make_listener, monkeypatch):
    monkeypatch.setattr(listener_module, "MAX_CONNECTIONS", 5)
    listener, _ = make_listener()
    port = listener.address[1]
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(connect(port))
        first.sendall(wire.PING)
        assert read_line(first) == wire.PONG
        others = [stack.enter_context(connect(port)) for _ in range(4)]
        for sock in others:
            sock.sendall(wire.PING)
            assert read_line(sock) == wire.PONG
        newest = stack.enter_context(connect(port))
        newest.sendall(wire.PING)
        assert read_line(newest) == wire.PONG
        assert read_to_end(first) == b""  # closed to make room
        for sock in others:
            sock.sendall(wire.PING)
            assert read_line(sock) == wire.PONG
