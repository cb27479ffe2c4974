"""The life of a task against a real `manage.py leek` server with real worker processes."""

import os
import pickle
import signal
import subprocess
import sys
from datetime import timedelta

from django.db import connection, transaction

from leek import serialize, signing
from leek.models import Task, TaskStatus
from tests import tasks
from tests.conftest import KIND, ROOT, holds_for, requires_postgres, wait_until
from tests.models import Row


def ready_row(fn, *args, **kwargs):
    """Save a READY task row without announcing it, as if its notification were lost."""
    return Task.objects.create(
        callable_path=serialize.callable_path(fn),
        payload=serialize.dumps_call(fn, args, kwargs),
    )


def finished(handle, timeout=60):
    return handle.wait(timeout)


def test_task_runs_in_a_worker_and_records_its_outcome(start_server):
    server = start_server()
    handle = finished(tasks.add.offload(2, 3))
    row = handle.task
    assert handle.status == TaskStatus.SUCCESSFUL
    assert handle.return_value == 5
    assert row.worker_pid in server.worker_pids()
    assert row.worker_pid != os.getpid()
    assert row.attempts == 1
    assert row.enqueued_at <= row.started_at <= row.finished_at
    assert row.callable_path == "tests.tasks.add"
    # The row is written before the supervisor hears of it and logs it.
    line = f"task {row.pk} tests.tasks.add SUCCESSFUL"
    wait_until(lambda: line in server.log(), 30, "the server to log the task")


def test_the_notification_alone_starts_the_task(start_server):
    # With a sweep once an hour, only the notification can get the task run.
    server = start_server(env={"LEEK_TEST_SWEEP_INTERVAL": "3600"})
    for n in range(3):
        assert finished(tasks.add.offload(n, 1), timeout=30).return_value == n + 1
    assert server.stats()["listener"]["notifications"] >= 3


def test_task_offloaded_in_a_rolled_back_transaction_never_runs(start_server):
    start_server()

    with transaction.atomic():
        tasks.write_row.offload(1)
        transaction.set_rollback(True)
    marker = finished(tasks.write_row.offload(2))
    assert marker.status == TaskStatus.SUCCESSFUL
    assert list(Row.objects.values_list("n", flat=True)) == [2]
    assert Task.objects.count() == 1


def test_task_offloaded_in_a_transaction_runs_after_commit(start_server):
    start_server()
    with transaction.atomic():
        handle = tasks.write_row.offload(7)
        # Neither a notification nor the sweep can reach a row that is not committed.
        assert holds_for(lambda: not Row.objects.exists(), 1.5)
    assert finished(handle).status == TaskStatus.SUCCESSFUL
    assert list(Row.objects.values_list("n", flat=True)) == [7]


def test_an_id_delivered_many_times_runs_once(start_server):
    server = start_server(workers=2)
    row = ready_row(tasks.write_row, 5)
    line = f"task default 0 {row.pk} {row.pk} {row.pk}\n".encode()
    for _ in range(5):
        assert server.request(line + b"ping\n") == b"pong\n"
    wait_until(lambda: Task.objects.get(pk=row.pk).status == TaskStatus.SUCCESSFUL)
    # More deliveries after it ran change nothing.
    assert server.request(line + b"ping\n") == b"pong\n"
    finished(tasks.add.offload(0, 0))
    assert Row.objects.filter(n=5).count() == 1
    assert Task.objects.get(pk=row.pk).attempts == 1


def test_one_worker_runs_tasks_one_at_a_time_in_enqueue_order(start_server):
    start_server(workers=1)
    with transaction.atomic():
        handles = [tasks.record_span.offload(i, 0.02) for i in range(12)]
    spans = [finished(h).return_value for h in handles]
    starts = [start for start, _ in spans]
    assert starts == sorted(starts)
    for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False):
        assert end <= next_start
    rows = list(Row.objects.order_by("created", "id").values_list("n", flat=True))
    assert rows == list(range(12))


def test_higher_priority_runs_first(start_server):
    start_server(workers=1)
    blocker = tasks.sleep_seconds.offload(1.0)
    wait_until(lambda: blocker.refresh().status == TaskStatus.RUNNING, message="blocker runs")
    with transaction.atomic():
        low = [tasks.record_span.using(priority=0).offload(i, 0) for i in range(3)]
        high = [tasks.record_span.using(priority=9).offload(10 + i, 0) for i in range(3)]
    for handle in low + high:
        finished(handle)
    order = list(Row.objects.order_by("id").values_list("n", flat=True))
    assert order == [10, 11, 12, 0, 1, 2]


def test_n_workers_run_tasks_at_once_in_n_processes(start_server):
    server = start_server(workers=3)
    with transaction.atomic():
        handles = [tasks.record_span.offload(i, 1.5) for i in range(3)]
    spans = [finished(h).return_value for h in handles]
    pids = {h.task.worker_pid for h in handles}
    assert len(pids) == 3
    assert pids <= set(server.worker_pids())
    latest_start = max(start for start, _ in spans)
    earliest_end = min(end for _, end in spans)
    assert latest_start < earliest_end, "the three tasks should have overlapped"


def test_each_worker_has_its_own_database_connection(start_server):
    start_server(workers=2)
    with transaction.atomic():
        handles = [tasks.record_span.offload(i, 1.0) for i in range(2)]
        probes = [tasks.connection_identity.offload() for _ in range(6)]
    for handle in handles + probes:
        finished(handle)
    identities = {tuple(h.return_value) for h in probes}
    by_pid = {}
    for pid, session in identities:
        by_pid.setdefault(pid, set()).add(session)
    if KIND == "postgres":
        sessions = [s for ss in by_pid.values() for s in ss]
        assert len(set(sessions)) == len(sessions), "two workers shared a database session"
    assert os.getpid() not in by_pid


def test_task_saved_while_the_server_is_down_runs_at_start(start_server, caplog):
    # The test settings point the client at a port nobody listens on.
    with caplog.at_level("WARNING", logger="leek.client"):
        handle = tasks.write_row.offload(3)
    assert handle.status == TaskStatus.READY
    assert len([r for r in caplog.records if r.name == "leek.client"]) == 1
    start_server()
    assert finished(handle).status == TaskStatus.SUCCESSFUL
    assert Row.objects.filter(n=3).count() == 1


def test_a_lost_notification_is_made_good_by_the_sweep(start_server):
    start_server()
    row = ready_row(tasks.add, 4, 4)
    wait_until(lambda: Task.objects.get(pk=row.pk).status == TaskStatus.SUCCESSFUL, 30)
    assert Task.objects.get(pk=row.pk).return_value == 8


def test_run_after_is_honoured(start_server):
    start_server()
    handle = tasks.add.using(run_after=timedelta(seconds=2)).offload(1, 1)
    due = handle.task.run_after
    finished(handle)
    assert handle.task.started_at >= due
    # Soon after: the sweep wakes at the next run_after, not only every interval.
    assert handle.task.started_at - due < timedelta(seconds=10)


def test_a_raising_task_fails_and_the_worker_goes_on(start_server):
    start_server()
    failed = finished(tasks.raise_value_error.offload("no such user"))
    assert failed.status == TaskStatus.FAILED
    assert failed.task.exception_class_path == "builtins.ValueError"
    assert failed.task.traceback.strip().endswith("ValueError: no such user")
    assert "raise_value_error" in failed.task.traceback
    after = finished(tasks.add.offload(1, 2))
    assert after.status == TaskStatus.SUCCESSFUL
    assert after.task.worker_pid == failed.task.worker_pid


def test_a_task_whose_code_is_gone_fails_saying_which_callable(start_server):
    start_server()
    call = pickle.dumps((tasks.add, (1, 2), {}))
    assert b"tests.tasks" in call
    row = Task.objects.create(
        callable_path="tests.tasks.add",
        # Same length, so the pickle stays well formed; the module does not exist. Signed
        # with the site's key, as a task offloaded before its module was deleted.
        payload=signing.sign(call.replace(b"tests.tasks", b"tests.gone_"), "call"),
    )
    wait_until(lambda: Task.objects.get(pk=row.pk).is_finished)
    row.refresh_from_db()
    assert row.status == TaskStatus.FAILED
    assert row.exception_class_path == "leek.exceptions.CallableNotFound"
    assert "tests.tasks.add" in row.traceback
    assert finished(tasks.add.offload(1, 1)).return_value == 2


def test_an_unpicklable_return_value_fails_saying_so(start_server):
    start_server()
    handle = finished(tasks.return_unpicklable.offload())
    assert handle.status == TaskStatus.FAILED
    assert handle.task.exception_class_path == "leek.exceptions.UnpicklableError"
    assert "return value of tests.tasks.return_unpicklable" in handle.error


def test_debug_true_does_not_grow_the_query_log(start_server):
    start_server(env={"LEEK_TEST_DEBUG": "1"})
    with transaction.atomic():
        handles = [tasks.count_queries.offload() for _ in range(40)]
    counts = [finished(h).return_value for h in handles]
    assert max(counts) < 10, counts


@requires_postgres
def test_worker_survives_its_database_session_being_killed(start_server):
    start_server(env={"LEEK_TEST_CONN_MAX_AGE": "none"})
    first = finished(tasks.connection_identity.offload())
    pid, backend = first.return_value
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [backend])
        assert cursor.fetchone()[0] is True
    second = finished(tasks.connection_identity.offload())
    assert second.status == TaskStatus.SUCCESSFUL
    assert second.return_value[0] == pid, "the same worker should have gone on"
    assert second.return_value[1] != backend


def test_a_pool_server_runs_only_its_pools(start_server):
    start_server("--pool", "emails")
    other = tasks.add.offload(1, 1)
    mine = finished(tasks.in_email_pool.offload())
    assert mine.return_value == "emails"
    assert holds_for(lambda: other.refresh().status == TaskStatus.READY, 1.5)


def test_burst_runs_every_due_task_and_exits(start_server):
    handles = [tasks.write_row.offload(i) for i in range(5)]
    later = tasks.add.using(run_after=timedelta(hours=1)).offload(1, 1)
    server = start_server("--burst", workers=2, point_client=False, expect_start=False)
    assert server.wait_exit(120) == 0, server.log()
    assert all(h.refresh().status == TaskStatus.SUCCESSFUL for h in handles)
    assert later.refresh().status == TaskStatus.READY
    assert Row.objects.count() == 5


def test_a_worker_that_dies_mid_task_fails_it_and_is_replaced(start_server):
    start_server()
    handle = finished(tasks.crash_with_os_exit.offload(3))
    assert handle.status == TaskStatus.FAILED
    assert handle.task.exception_class_path == "leek.exceptions.WorkerLost"
    pid = handle.task.worker_pid
    assert f"worker {pid} exited with code 3" in handle.error
    assert f"task {handle.id}" in handle.error
    after = finished(tasks.add.offload(1, 1))
    assert after.status == TaskStatus.SUCCESSFUL
    assert after.task.worker_pid != pid


def test_sigterm_lets_the_running_task_finish_and_keeps_ready_ones(start_server):
    server = start_server(workers=1)
    running = tasks.sleep_seconds.offload(2)
    wait_until(lambda: running.refresh().status == TaskStatus.RUNNING, message="task starts")
    waiting = tasks.add.offload(1, 1)
    server.signal(signal.SIGTERM)
    assert server.wait_exit(60) == 0, server.log()
    assert running.refresh().status == TaskStatus.SUCCESSFUL
    assert waiting.refresh().status == TaskStatus.READY
    wait_until(
        lambda: not [p for p in server.known_pids if _alive(p)], 20, "every process to exit"
    )


def test_sqlite_with_four_workers_takes_a_burst_of_writes(start_server):
    server = start_server(workers=4)
    count = 1500
    with transaction.atomic():
        handles = [tasks.write_row.offload(i) for i in range(count)]
    ids = [h.id for h in handles]
    done = (TaskStatus.SUCCESSFUL, TaskStatus.FAILED)
    wait_until(
        lambda: Task.objects.filter(id__in=ids, status__in=done).count() == count,
        timeout=240,
        message="1500 tasks to finish",
        interval=0.5,
    )
    assert Task.objects.filter(id__in=ids, status=TaskStatus.SUCCESSFUL).count() == count
    assert Row.objects.count() == count
    assert Row.objects.values("n").distinct().count() == count
    assert Row.objects.values("pid").distinct().count() > 1
    assert "database is locked" not in server.log()


def test_offload_many_runs_every_call_once_and_in_order_on_one_worker(start_server):
    start_server(workers=1)
    handles = tasks.record_span.offload_many((n, 0) for n in range(400))
    for handle in handles:
        assert finished(handle).status == TaskStatus.SUCCESSFUL
    # One worker: strictly in enqueue order, never overlapping.
    spans = [h.return_value for h in handles]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert list(Row.objects.order_by("id").values_list("n", flat=True)) == list(range(400))
    assert Task.objects.filter(attempts=1, id__in=[h.id for h in handles]).count() == 400


def test_the_command_refuses_a_bad_setting():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LEEK_TEST_PORT": "99999"}
    result = subprocess.run(
        [sys.executable, "-m", "django", "leek", "--workers", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "LEEK['port']" in result.stderr


def _alive(pid):
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
