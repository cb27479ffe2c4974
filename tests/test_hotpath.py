"""leek.hotpath in this process: the rows it writes, and the SQLite writers' turn lock."""

import fcntl
import multiprocessing

import pytest
from django.db import connection, transaction

from leek import client, hotpath
from leek.models import Task, TaskStatus
from leek.runner import database
from leek.states import Claim
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
        assert not writer.succeed(task_id, Claim(4343, "host", 1), b"N.")  # not that worker's
        assert not writer.succeed(task_id, Claim(4242, "other", 1), b"N.")  # nor that host's
        assert not writer.succeed(task_id, Claim(4242, "host", 2), b"N.")  # another attempt
        assert writer.succeed(task_id, Claim(4242, "host", 1), b"N.")
        assert not writer.succeed(task_id, Claim(4242, "host", 1), b"N.")  # not RUNNING now


def test_an_outcome_written_by_a_try_whose_commit_was_not_answered_is_known(notified_nowhere):
    from leek import runner

    def outcome(task_id, status, **fields):
        return runner.Outcome(task_id, "tests.tasks.add", status, 0.01, attempt=1, **fields)

    done, retried, snoozed = (tasks.add.offload(1, 2).id for _ in range(3))
    with hotpath.transaction(database()) as writer:
        for task_id in (done, retried, snoozed):
            writer.claim(task_id, 4242, "host")
    claim = Claim(4242, "host", 1)
    with hotpath.transaction(database()) as writer:
        assert writer.succeed(done, claim, b"N.")
    assert Task.objects.retry(retried, claim, 0, "builtins.ValueError", "once")
    assert Task.objects.snooze(snoozed, claim, 60, "leek.exceptions.Snooze: 60")
    alias = database()
    assert runner.recorded_before(alias, outcome(done, TaskStatus.SUCCESSFUL), 4242, "host")
    assert not runner.recorded_before(alias, outcome(done, TaskStatus.SUCCESSFUL), 4343, "host")
    assert not runner.recorded_before(alias, outcome(done, TaskStatus.FAILED), 4242, "host")
    again = outcome(retried, TaskStatus.READY, class_path="builtins.ValueError")
    assert runner.recorded_before(alias, again, 4242, "host")
    assert not runner.recorded_before(alias, again, 4242, "other-host")
    later = outcome(snoozed, TaskStatus.READY, class_path="leek.exceptions.Snooze", snoozed=True)
    assert runner.recorded_before(alias, later, 4242, "host")
    # Settled by another server and claimed again: the row moved on, not by this outcome.
    with hotpath.transaction(database()) as writer:
        writer.claim(retried, 5555, "host-b")
    assert not runner.recorded_before(alias, again, 4242, "host")


def test_a_late_outcome_cannot_overwrite_a_later_attempt_of_the_same_pid(notified_nowhere):
    # Issue 13, fencing: attempt 1 ran on host A under pid 4242; another server settled it
    # (lost_retries) and a worker of host B, which has the same pid, runs attempt 2.
    task_id = tasks.add.using(lost_retries=1).offload(1, 2).id
    first = Claim(4242, "host-a", 1)
    with hotpath.transaction(database()) as writer:
        assert writer.claim(task_id, 4242, "host-a").attempts == 1
    assert Task.objects.lose(task_id, first, "host-a stopped beating") == TaskStatus.READY
    with hotpath.transaction(database()) as writer:
        assert writer.claim(task_id, 4242, "host-b").attempts == 2
    # host-a comes back with its outcomes: none of them lands.
    with hotpath.transaction(database()) as writer:
        assert not writer.succeed(task_id, first, b"N.")
    assert not Task.objects.fail(task_id, first, "builtins.ValueError", "late")
    assert not Task.objects.retry(task_id, first, 1.0, "builtins.ValueError", "late")
    assert Task.objects.lose(task_id, first, "late") == ""
    row = Task.objects.get(pk=task_id)
    assert (row.status, row.worker_host, row.attempts) == ("RUNNING", "host-b", 2)
    assert Task.objects.fail(task_id, Claim(4242, "host-b", 2), "builtins.ValueError", "x")


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


def test_a_claim_whose_commit_was_not_seen_is_taken_up_by_its_worker_only(notified_nowhere):
    # The connection broke at COMMIT: the worker does not know its claim went through.
    task_id = tasks.add.offload(1, 2).id
    with hotpath.transaction(database()) as writer:
        assert writer.claim(task_id, 4242, "host").attempts == 1
    with hotpath.transaction(database()) as writer:
        assert writer.claim(task_id, 4242, "host") is None  # not READY any more
        assert writer.reclaim(task_id, 4343, "host") is None  # another worker's
        assert writer.reclaim(task_id, 4242, "other") is None  # another host's
        again = writer.reclaim(task_id, 4242, "host")
    assert (again.task_id, again.attempts, again.callable_path) == (task_id, 1, "tests.tasks.add")
