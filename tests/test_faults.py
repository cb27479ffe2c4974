"""Faults underneath: the database going away mid-run.

On PostgreSQL the test restarts a PostgreSQL instance of its own (tests.pginstance), never
the machine's shared cluster. On MariaDB a real server and its workers reach the database
through a forwarder of this test's own (tests.forwarder), which drops every connection and
refuses new ones for a while, as a restarting database does.
"""

import re
import time

import pytest
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from leek import dbclock
from leek.models import Server, Task, TaskStatus
from tests import tasks
from tests.conftest import (
    KIND,
    requires_postgres,
    requires_server_db,
    this_process_on,
    wait_until,
)
from tests.forwarder import Forwarder
from tests.models import Row
from tests.pginstance import PgInstance

LOST = "leek.exceptions.WorkerLost"


def wait_all_ended(server, ids):
    unfinished = Task.objects.filter(id__in=ids, status__in=("READY", "RUNNING"))
    try:
        wait_until(lambda: not unfinished.exists(), 300, "every task", 0.2)
    except pytest.fail.Exception:
        stuck = list(unfinished.values_list("id", "status", "worker_pid", "attempts")[:10])
        pytest.fail(f"unfinished: {stuck}\n{server.stats()}\n{server.log()[-5000:]}")


def assert_each_ran_once(ids):
    """Each task that succeeded wrote its row, and no row was written twice."""
    ns = list(Row.objects.values_list("n", flat=True))
    assert len(ns) == len(set(ns)), "a task ran twice"
    by_id = dict(zip(ids, range(len(ids)), strict=True))
    rows = Task.objects.filter(id__in=ids, status=TaskStatus.SUCCESSFUL)
    assert {by_id[i] for i in rows.values_list("id", flat=True)} <= set(ns)


@requires_postgres
def test_a_postgresql_restart_mid_run_loses_nothing_and_runs_nothing_twice(start_server):
    pg = PgInstance()
    try:
        pg.init()
        pg.execute(f'CREATE DATABASE "{connection.settings_dict["NAME"]}"')
        with this_process_on(HOST="127.0.0.1", PORT=str(pg.port)):
            restart_mid_run(start_server(workers=2, env=pg.env), pg)
    finally:
        pg.close()


def restart_mid_run(server, pg):
    count = 2000
    with transaction.atomic():
        handles = tasks.write_row_or_retry.offload_many((i,) for i in range(count))
    ids = [h.id for h in handles]
    wait_until(lambda: Row.objects.count() >= 200, 120, "the run to be under way")
    pg.stop()  # fast: every session is ended at once
    # A web process's offload fails while the database is down, and says what it was doing.
    connection.close()  # as Django does at the start of a request, after an error
    with pytest.raises(OperationalError, match="cannot save the task tests.tasks.add"):
        tasks.add.offload(1, 2)
    pg.start()
    connection.close()
    restarted_at = dbclock.now("default")
    # Ahead of the backlog: it runs as soon as the pool serves again.
    assert tasks.add.using(priority=1).offload(1, 2).wait(60).return_value == 3
    wait_all_ended(server, ids)
    # A task whose row write met the restart ran again: none is FAILED.
    failed = Task.objects.filter(id__in=ids, status=TaskStatus.FAILED)
    assert not failed.exists(), list(failed.values_list("id", "traceback")[:5])
    assert_each_ran_once(ids)
    assert Row.objects.count() == count
    # The heartbeat thread met the cut in whichever of its steps came first, and beats again.
    steps = (
        "the server's heartbeat|the count of READY tasks|the tasks of silent servers"
        "|the operators' orders|the retention's purge"
    )
    assert re.search(f"cannot write ({steps}), trying again", server.log())
    beat_again = Server.objects.filter(heartbeat_at__gt=restarted_at)
    wait_until(beat_again.exists, 60, "the server's heartbeat after the restart", 0.2)
    assert server.proc.poll() is None


@pytest.mark.skipif(
    KIND != "mariadb", reason="MariaDB only (PostgreSQL restarts a real instance above)"
)
def test_a_database_restart_mid_run_loses_nothing_and_runs_nothing_twice(start_server):
    forwarder = Forwarder()
    forwarder.start()
    try:
        server = start_server(workers=2, env=forwarder.env)
        count = 2000
        with transaction.atomic():
            handles = tasks.write_row.offload_many((i,) for i in range(count))
        ids = [h.id for h in handles]
        wait_until(lambda: Row.objects.count() >= 200, 120, "the run to be under way")
        forwarder.cut(2.5)
        time.sleep(2.5)
        before = Row.objects.count()
        wait_until(lambda: Row.objects.count() > before, 60, "the pool to serve again")
        wait_all_ended(server, ids)
        rows = Task.objects.filter(id__in=ids)
        failed = rows.filter(status=TaskStatus.FAILED)
        # A task whose finished outcome met the dead connection is written once it is back;
        # only one whose own body met it has failed, with the database's error.
        assert not failed.filter(exception_class_path=LOST).exists(), list(
            failed.values_list("id", "traceback")[:5]
        )
        assert set(failed.values_list("exception_class_path", flat=True)) <= {
            "django.db.utils.OperationalError",
            "django.db.utils.InterfaceError",
        }
        assert_each_ran_once(ids)
        assert rows.filter(status="SUCCESSFUL").count() + failed.count() == count
        assert server.proc.poll() is None
    finally:
        forwarder.close()


@requires_server_db
def test_a_task_that_ran_in_time_is_not_killed_while_its_outcome_waits_for_the_database(
    start_server,
):
    forwarder = Forwarder()
    forwarder.start()
    try:
        server = start_server(workers=1, env=forwarder.env)
        handle = tasks.sleep_seconds.using(timeout=4).offload(3)
        wait_until(lambda: handle.refresh().status == TaskStatus.RUNNING, 30, "the task to run")
        forwarder.cut(6)  # past the time limit: the outcome waits for the database
        handle.wait(60)
        assert handle.status == TaskStatus.SUCCESSFUL, handle.traceback
        assert "database error" in server.log()  # it met the cut, and waited it out
    finally:
        forwarder.close()


def test_a_late_outcome_of_a_task_settled_elsewhere_is_discarded_and_said(start_server):
    # Issue 13, fencing. While the worker runs attempt 1, the row is settled and claimed
    # again, as another server would after this one's lease ran out, by a worker of another
    # host with the same pid (containers of one image number their processes alike).
    server = start_server(workers=1, env={"LEEK_TEST_HEARTBEAT_INTERVAL": "0.5"})
    handle = tasks.sleep_seconds.offload(3)
    wait_until(lambda: handle.refresh().status == TaskStatus.RUNNING, 30, "the task to run")
    pid = handle.task.worker_pid
    mine = Server.objects.filter(pid=server.pid)
    wait_until(mine.exists, 30, "the server's row")
    mine.update(stopped_at=timezone.now())  # taken for gone, as the lease rule does
    Task.objects.filter(pk=handle.id).update(worker_host="another-host", attempts=2)
    wait_until(lambda: "beats again after its lease ran out" in server.log(), 30, "the revival")
    wait_until(lambda: mine.get().stopped_at is None, 30, "the row live again")
    wait_until(lambda: "was discarded" in server.log(), 30, "the late outcome to be dropped")
    row = handle.refresh().task
    assert (row.status, row.worker_host, row.worker_pid) == ("RUNNING", "another-host", pid)
    assert row.finished_at is None
    assert f"worker {pid}: the outcome of task {handle.id} tests.tasks.sleep_seconds" in (
        server.log()
    )
    # The supervisor says so too, rather than logging the task as SUCCESSFUL.
    path = "tests.tasks.sleep_seconds"
    wait_until(lambda: "but its outcome was discarded" in server.log(), 30, "the supervisor")
    assert f"task {handle.id} {path} SUCCESSFUL" not in server.log()
    assert server.stats()["counts"].get("discarded") == 1
    assert tasks.add.offload(1, 1).wait(60).return_value == 2


def test_an_error_text_no_database_can_store_is_recorded_all_the_same(start_server):
    # PostgreSQL refuses NUL in text, and no database takes a lone surrogate: the worker
    # records them escaped (it used to retry such an outcome for ever).
    start_server(workers=1)
    handle = tasks.raise_value_error.offload("nul \x00 and \udcff here").wait(60)
    assert handle.status == TaskStatus.FAILED
    assert "nul \\x00 and \\udcff here" in handle.error
    assert tasks.add.offload(1, 1).wait(60).return_value == 2


def test_an_outcome_the_database_refuses_becomes_a_short_failure():
    from leek.runner import REFUSED, Outcome, unrecordable

    done = Outcome(5, "app.tasks.big", TaskStatus.SUCCESSFUL, 0.5, result=b"x", attempt=2)
    failed = unrecordable(done, ValueError("packet too large \x00"))
    assert (failed.status, failed.class_path, failed.attempt) == ("FAILED", REFUSED, 2)
    assert failed.result == b""
    assert "task 5 app.tasks.big (SUCCESSFUL): ValueError: packet too large \\x00" in failed.text
