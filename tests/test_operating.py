"""A real server's row in the table, and the operators' orders it carries out."""

import logging
import signal
import time
from datetime import timedelta

import psutil
from django.db import connection, transaction
from django.utils import timezone

from leek import control
from leek.models import Server, Task, TaskStatus
from tests import tasks
from tests.conftest import holds_for, wait_until
from tests.models import Row


def server_row(server):
    return Server.objects.filter(pid=server.pid).first()


def test_the_server_keeps_its_row_and_marks_a_clean_stop(start_server):
    server = start_server(workers=2)
    row = wait_until(
        lambda: (r := server_row(server)) and len(r.workers) == 2 and r, 30, "the server's row"
    )
    assert row.address == f"127.0.0.1:{server.port}"
    assert row.pools == []
    assert row.stopped_at is None
    assert row.is_live
    assert {w["pid"] for w in row.workers} == {w["pid"] for w in server.stats()["workers"]}
    handle = tasks.sleep_seconds.offload(30)

    def shows_task():
        found = server_row(server)
        return [w for w in found.workers if w["task"] == handle.id] and found

    # A task start is written at once, not at the next beat (5 s away).
    row = wait_until(shows_task, 4, "the running task on the row")
    [busy] = [w for w in row.workers if w["task"] == handle.id]
    assert busy["callable"] == "tests.tasks.sleep_seconds"
    assert busy["state"] == "busy"
    assert busy["task_since"] is not None
    assert "done" in row.counts
    assert "crash" in row.restarts
    beat = row.heartbeat_at
    wait_until(lambda: server_row(server).heartbeat_at > beat, 15, "the next heartbeat")
    control.cancel([handle.id], "test")  # RUNNING: cancel does not touch it
    server.signal(signal.SIGINT)
    wait_until(lambda: "SIGINT: finishing" in server.log(), 30, "the first SIGINT")
    server.signal(signal.SIGINT)  # at once
    assert server.wait_exit() == 130
    row = server_row(server)
    assert row.stopped_at is not None
    assert row.workers == []
    assert not row.is_live


def test_terminate_kills_the_workers_tree_and_spares_the_other_tasks(start_server):
    server = start_server(workers=2)
    doomed = tasks.sleep_with_child.offload(120)
    child = wait_until(lambda: Row.objects.filter(pid__isnull=False).first(), 30, "the child")
    spared = tasks.sleep_seconds.offload(3)
    wait_until(
        lambda: Task.objects.get(pk=spared.id).status == TaskStatus.RUNNING, 30, "the 2nd task"
    )
    doomed_pid = Task.objects.get(pk=doomed.id).worker_pid
    assert control.terminate([doomed.id], "alice") == [doomed.id]
    wait_until(
        lambda: Task.objects.get(pk=doomed.id).status == TaskStatus.FAILED, 10, "terminated"
    )
    row = Task.objects.get(pk=doomed.id)
    assert row.exception_class_path == "leek.exceptions.Terminated"
    assert "terminated by alice" in row.exception_message
    assert f"worker {doomed_pid}" in row.traceback
    assert (row.control_action, row.control_by) == ("terminate", "alice")
    assert not _alive(doomed_pid)
    assert not _alive(child.n)
    # The other task ends as it would have, on its own worker.
    assert spared.wait(30).status == TaskStatus.SUCCESSFUL
    # A replacement worker starts.
    workers = server.wait_workers(2)
    assert doomed_pid not in {w["pid"] for w in workers}
    stats = server.stats()
    assert stats["restarts"]["terminated"] == 1
    assert stats["counts"]["terminated"] == 1
    assert stats["restarts"]["crash"] == 0
    assert "terminated by alice" in server.log()


def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_a_paused_pool_starts_nothing_until_resumed_even_across_a_restart(start_server):
    server = start_server(workers=2)
    running = tasks.sleep_seconds.offload(2)
    wait_until(
        lambda: Task.objects.get(pk=running.id).status == TaskStatus.RUNNING, 30, "the 1st task"
    )
    assert control.pause("default", "erin") is True
    waiting = tasks.add.offload(1, 2)
    # The running task finishes; the new one waits; another pool is served.
    assert running.wait(30).status == TaskStatus.SUCCESSFUL
    assert tasks.in_email_pool.offload().wait(30).status == TaskStatus.SUCCESSFUL
    assert holds_for(lambda: Task.objects.get(pk=waiting.id).status == TaskStatus.READY, 2)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    # The pause is in the table: the next server holds the pool too.
    start_server(workers=1)
    assert holds_for(lambda: Task.objects.get(pk=waiting.id).status == TaskStatus.READY, 2)
    assert control.resume("default", "erin") is True
    assert waiting.wait(30).return_value == 3


def test_a_failing_task_is_logged_at_error_with_its_traceback_in_the_worker(start_server):
    server = start_server()
    handle = tasks.raise_value_error.offload("boom 4711")
    assert handle.wait(30).status == TaskStatus.FAILED
    worker = handle.task.worker_pid
    line = f"task {handle.id} tests.tasks.raise_value_error failed on worker {worker}"
    log = wait_until(lambda: line in server.log() and server.log(), 30, "the worker's log")
    after = log[log.index(line) :]
    assert "ValueError: boom 4711" in after.splitlines()[0]
    assert "Traceback (most recent call last):" in after
    assert "raise ValueError(message)" in after


def test_the_failure_log_record_carries_the_exception(settings, caplog):
    settings.LEEK = {**settings.LEEK, "eager": True}
    with caplog.at_level(logging.ERROR, logger="leek"):
        handle = tasks.raise_value_error.offload("eager boom")
    assert handle.status == TaskStatus.FAILED
    [record] = [r for r in caplog.records if r.name == "leek.task"]
    assert record.levelno == logging.ERROR
    assert record.exc_info[0] is ValueError
    assert str(record.exc_info[1]) == "eager boom"
    assert f"task {handle.id} tests.tasks.raise_value_error failed" in record.getMessage()


def test_the_server_purges_by_the_retention_setting(start_server):
    old = timezone.now() - timedelta(hours=2)
    rows = [
        Task(callable_path="tests.tasks.add", payload=b"", status=status, finished_at=when)
        for status, when, count in [
            (TaskStatus.SUCCESSFUL, old, 500),
            (TaskStatus.FAILED, old, 3),
            (TaskStatus.SUCCESSFUL, timezone.now(), 2),
        ]
        for _ in range(count)
    ]
    Task.objects.bulk_create(rows)
    server = start_server(env={"LEEK_TEST_RETENTION": '{"SUCCESSFUL": "1h", "FAILED": "3h"}'})
    # In batches of a few hundred, one batch a second at most.
    wait_until(lambda: Task.objects.count() == 5, 60, "the old successes to go")
    assert Task.objects.filter(status=TaskStatus.FAILED).count() == 3
    wait_until(lambda: "retention: deleted" in server.log(), 10, "the retention's log")


def test_a_locked_server_table_never_holds_up_the_loop(start_server):
    server = start_server(env={"LEEK_TEST_HEARTBEAT_INTERVAL": "0.5"})
    wait_until(lambda: server_row(server), 30, "the server's row")
    with transaction.atomic():
        # Nobody may write the server's row until this transaction ends.
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("LOCK TABLE leek_server IN ACCESS EXCLUSIVE MODE")
        else:  # an IMMEDIATE transaction (tests.settings) holds SQLite's write lock
            Row.objects.create(n=0)
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            # The loop answers at once while its heartbeat waits for the database.
            started = time.monotonic()
            assert server.stats()["workers"]
            assert time.monotonic() - started < 2
            time.sleep(0.2)
        released = timezone.now()
    wait_until(lambda: server_row(server).heartbeat_at > released, 30, "the heartbeat to resume")
