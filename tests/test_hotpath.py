"""leek.hotpath in this process: the rows it writes, and the SQLite writers' turn lock."""

import fcntl
import multiprocessing

import pytest
from django.db import connection, transaction

from leek import client, hotpath
from leek.runner import database
from tests import tasks
from tests.conftest import KIND

sqlite_only = pytest.mark.skipif(KIND != "sqlite", reason="the turn lock is for SQLite")


@pytest.fixture
def notified_nowhere(monkeypatch):
    """No notifications: these tests need no server."""
    monkeypatch.setattr(client, "notify", lambda pool, priority, ids: True)


def test_a_claim_returns_what_the_worker_needs_and_only_once(notified_nowhere):
    task_id = tasks.add.using(timeout=7, retries=2).offload(1, 2).id
    with hotpath.transaction(database()) as writer:
        claimed = writer.claim(task_id, 4242, "host")
        assert writer.claim(task_id, 4343, "host") is None
    assert (claimed.task_id, claimed.callable_path) == (task_id, "tests.tasks.add")
    assert (claimed.timeout, claimed.attempts, claimed.retries) == (7, 1, 2)
    with hotpath.transaction(database()) as writer:
        assert not writer.succeed(task_id, 4343, b"N.")  # not that worker's
        assert writer.succeed(task_id, 4242, b"N.")
        assert not writer.succeed(task_id, 4242, b"N.")  # not RUNNING any more


@sqlite_only
def test_an_offload_in_a_transaction_does_not_wait_for_the_turn(notified_nowhere, monkeypatch):
    # Inside atomic() the connection may hold SQLite's lock already: waiting for the turn
    # there could deadlock with a worker that holds the turn and waits for SQLite.
    turns = []
    monkeypatch.setattr(fcntl, "flock", lambda fd, op: turns.append(op))
    with transaction.atomic():
        tasks.add.offload(1, 2)
    assert turns == []
    tasks.add.offload(1, 2)
    assert turns == [fcntl.LOCK_EX, fcntl.LOCK_UN]


def _try_the_turn(result):
    fd = hotpath._turn_fd(connection)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        result.put("waits")
    else:
        result.put("got it")


@sqlite_only
def test_a_forked_process_takes_its_own_turn():
    # A lock file inherited across fork is the same lock: the child must open its own.
    fd = hotpath._turn_fd(connection)
    assert fd is not None
    assert hotpath._turn_fd(connection) == fd
    context = multiprocessing.get_context("fork")
    result = context.Queue()
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        child = context.Process(target=_try_the_turn, args=(result,))
        child.start()
        assert result.get(timeout=30) == "waits"
        child.join(30)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
    assert child.exitcode == 0
