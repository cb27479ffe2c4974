"""leek as a Django Tasks backend, against real servers, real workers and a real database."""

import asyncio
import dataclasses
import os
from datetime import datetime, timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

djtasks = pytest.importorskip("leek.djtasks", reason="neither django.tasks nor django_tasks")

from leek import api, client, serialize  # noqa: E402
from leek.backend import LeekBackend  # noqa: E402
from leek.models import Encoding, Task, TaskStatus  # noqa: E402
from tests import dt_tasks, tasks  # noqa: E402
from tests.conftest import holds_for, wait_until  # noqa: E402
from tests.models import Row  # noqa: E402

Status = djtasks.TaskResultStatus


def finished(result, timeout=60):
    wait_until(lambda: (result.refresh(), result.is_finished)[1], timeout, f"task {result.id}")
    return result


def worker_pid(result, attempt=-1):
    return int(result.worker_ids[attempt].rpartition(":")[2])


@pytest.fixture
def notified_nowhere(monkeypatch):
    """No notifications: these tests need no server."""
    sent = []
    monkeypatch.setattr(client, "notify", lambda pool, priority, ids: sent.append(ids) or True)
    return sent


def test_the_backend_says_what_it_supports():
    backend = djtasks.Task.get_backend(dt_tasks.add)
    assert isinstance(backend, LeekBackend)
    assert backend.supports_defer
    assert backend.supports_async_task
    assert backend.supports_get_result
    assert backend.supports_priority
    assert isinstance(dt_tasks.add, backend.task_class)


def test_the_enqueued_result_equals_the_one_read_back(notified_nowhere):
    result = dt_tasks.add.using(priority=7).enqueue(1, b=2)
    assert result.status == Status.READY
    assert (result.args, result.kwargs, result.backend) == ([1], {"b": 2}, "default")
    read = dt_tasks.add.get_result(result.id)
    # Every field, timestamps to the microsecond, the task with its priority.
    assert read == result
    assert dataclasses.asdict(read) == dataclasses.asdict(result)
    row = Task.objects.get(pk=int(result.id))
    assert (row.encoding, row.priority, row.pool) == (Encoding.JSON, 7, "default")
    assert row.callable_path == "tests.dt_tasks.add"
    assert row.enqueued_at == result.enqueued_at
    assert notified_nowhere == [[row.pk]]


def test_a_task_runs_in_a_worker_and_returns_json(start_server):
    server = start_server()
    result = finished(dt_tasks.add.enqueue(2, 3))
    assert result.status == Status.SUCCESSFUL
    assert result.return_value == 5
    assert result.attempts == 1
    assert result.errors == []
    assert worker_pid(result) in server.worker_pids()
    assert result.enqueued_at <= result.started_at == result.last_attempted_at
    assert result.started_at <= result.finished_at
    row = Task.objects.get(pk=int(result.id))
    assert serialize.loads_json(row.result) == 5
    assert row.return_value == 5


def test_one_path_backend_and_offload_tasks_run_in_priority_order(start_server):
    # Saved while no server runs; the server's sweep hands them out by priority, then age.
    dt_tasks.write_row.using(priority=-5).enqueue(4)
    tasks.write_row.using(priority=5).offload(2)
    dt_tasks.write_row.using(priority=10).enqueue(1)
    tasks.write_row.offload(3)
    start_server(workers=1)
    wait_until(lambda: Row.objects.count() == 4, 60, "four tasks")
    assert list(Row.objects.order_by("id").values_list("n", flat=True)) == [1, 2, 3, 4]
    encodings = Task.objects.order_by("-priority").values_list("encoding", flat=True)
    assert list(encodings) == ["json", "pickle", "pickle", "json"]
    # The last outcome is recorded once the worker is idle again.
    wait_until(
        lambda: Task.objects.filter(status=TaskStatus.SUCCESSFUL).count() == 4, 30, "the records"
    )


def test_a_lost_worker_reads_as_failed_with_worker_lost(start_server):
    server = start_server()
    result = finished(dt_tasks.crash_with_os_exit.enqueue(3))
    assert result.status == Status.FAILED
    [error] = result.errors
    assert error.exception_class_path == "leek.exceptions.WorkerLost"
    assert "code 3" in error.traceback
    from leek.exceptions import WorkerLost

    assert error.exception_class is WorkerLost
    assert result.attempts == 1
    server.wait_workers(1)


def test_lost_retries_leave_one_error_per_lost_attempt(start_server):
    start_server()
    result = finished(dt_tasks.crash_every_time.enqueue())
    assert result.status == Status.FAILED
    assert [e.exception_class_path for e in result.errors] == ["leek.exceptions.WorkerLost"] * 2
    assert result.attempts == 2
    assert result.worker_ids[0] != result.worker_ids[1]


def test_retries_leave_one_task_error_per_failed_attempt(start_server):
    start_server()
    result = finished(dt_tasks.fail_until_third_call.enqueue(9))
    assert result.status == Status.SUCCESSFUL
    assert result.return_value == 3
    assert result.attempts == 3
    assert len(result.worker_ids) == 3
    assert [e.exception_class_path for e in result.errors] == ["builtins.RuntimeError"] * 2
    assert "call 1 fails" in result.errors[0].traceback
    assert "call 2 fails" in result.errors[1].traceback
    # started_at is the first attempt's, last_attempted_at the last one's.
    assert result.started_at < result.last_attempted_at <= result.finished_at

    failed = finished(dt_tasks.always_fail.enqueue())
    assert failed.status == Status.FAILED
    assert [e.exception_class for e in failed.errors] == [RuntimeError, RuntimeError]
    with pytest.raises(ValueError, match="Task failed"):
        failed.return_value  # noqa: B018


def test_a_task_waiting_for_its_retry_shows_the_attempt_that_failed(start_server):
    start_server()
    result = dt_tasks.fail_then_wait_long.enqueue()
    wait_until(lambda: (result.refresh(), result.errors)[1], 60, "the first attempt's error")
    assert result.status == Status.READY
    [error] = result.errors
    assert error.exception_class is RuntimeError
    assert len(result.worker_ids) == 1
    assert result.attempts == 1
    assert result.started_at == result.last_attempted_at
    assert result.finished_at is None


def test_a_raising_task_fails_with_its_error_and_the_worker_lives_on(start_server):
    server = start_server()
    result = finished(dt_tasks.raise_value_error.enqueue("nope"))
    assert result.status == Status.FAILED
    [error] = result.errors
    assert error.exception_class is ValueError
    assert error.traceback.endswith("ValueError: nope\n")
    # SystemExit fails the task, as Django's own backends do, and does not end the worker.
    pid = server.worker_pids()
    exited = finished(dt_tasks.exit_with_system_exit.enqueue())
    assert exited.status == Status.FAILED
    assert exited.errors[0].exception_class is SystemExit
    assert server.worker_pids() == pid


def test_a_return_value_json_cannot_hold_fails_the_task(start_server):
    start_server()
    result = finished(dt_tasks.return_a_set.enqueue())
    assert result.status == Status.FAILED
    assert result.errors[0].exception_class is TypeError
    assert "Unsupported type" in result.errors[0].traceback


def test_an_async_task_runs_to_completion(start_server):
    start_server()
    result = finished(dt_tasks.async_add.enqueue(20, 22))
    assert result.status == Status.SUCCESSFUL
    assert result.return_value == 42


def test_the_context_counts_attempts_from_one_and_holds_the_current_result(start_server):
    server = start_server()
    result = finished(dt_tasks.report_context.enqueue(5))
    seen = result.return_value
    assert seen["attempt"] == 1
    assert seen["id"] == result.id
    assert seen["worker_ids"] == result.worker_ids
    assert seen["status"] == "RUNNING"
    assert seen["pid"] in server.worker_pids()
    again = finished(dt_tasks.fail_first_attempt_with_context.enqueue())
    assert again.return_value == 2


def test_signals_reach_the_process_that_sent_them(start_server):
    server = start_server()
    result = finished(dt_tasks.signalled.enqueue(7))
    # The receivers that raise are logged; the task and its worker carry on.
    assert result.status == Status.SUCCESSFUL
    wait_until(lambda: Row.objects.count() == 3, 30, "a row per signal")
    pids = dict(Row.objects.values_list("n", "pid"))
    assert pids[1007] == os.getpid()
    assert pids[2007] == pids[3007] == worker_pid(result)
    assert pids[2007] in server.worker_pids()


def test_a_rolled_back_enqueue_never_runs(start_server):
    start_server()
    seen = []

    def enqueue_then_roll_back():
        with transaction.atomic():
            rolled_back = dt_tasks.write_row.enqueue(1)
            seen.append(Task.objects.filter(pk=int(rolled_back.id)).exists())
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        enqueue_then_roll_back()
    assert seen == [True]
    with transaction.atomic():
        committed = dt_tasks.write_row.enqueue(2)
    finished(committed)
    assert holds_for(lambda: not Row.objects.filter(n=1).exists(), 1.0)
    # (SQLite may give the committed row the id the rolled-back one had.)
    assert list(Task.objects.values_list("payload", flat=True)) == [b'{"args":[2],"kwargs":{}}']


def test_arguments_json_cannot_hold_are_refused_as_django_refuses_them(settings):
    def refusal(call):
        with pytest.raises(Exception) as caught:  # noqa: PT011 - compared below
            call()
        return type(caught.value), str(caught.value)

    calls = [
        lambda: dt_tasks.noop.enqueue(datetime.now()),
        lambda: dt_tasks.noop.enqueue(when={1, 2}),
        lambda: dt_tasks.noop.enqueue(b"\xff"),
    ]
    ours = [refusal(call) for call in calls]
    assert Task.objects.count() == 0
    assert ours[0] == (TypeError, f"Unsupported type: {datetime}")
    dummy = djtasks.BaseTaskBackend.__module__.replace(".base", ".dummy.DummyBackend")
    settings.TASKS = {"default": {"BACKEND": dummy}}
    assert [refusal(call) for call in calls] == ours


def test_a_row_naming_anything_but_a_task_is_never_run(start_server):
    start_server()
    options = api.TaskOptions()
    call = serialize.dumps_json({"args": [], "kwargs": {}})
    paths = ["tests.dt_tasks.not_a_task", "os.getcwd", "tests.dt_tasks.missing", "nowhere.x"]
    ids = [api.save(options, path, [call], Encoding.JSON).ids[0] for path in paths]
    wait_until(
        lambda: Task.objects.filter(pk__in=ids, status=TaskStatus.FAILED).count() == 4,
        60,
        "the four rows to fail",
    )
    rows = Task.objects.in_bulk(ids)
    for task_id in ids[:2]:
        assert rows[task_id].exception_class_path == "leek.exceptions.NotATask"
        assert "not a django.tasks Task" in rows[task_id].traceback
    for task_id in ids[2:]:
        assert rows[task_id].exception_class_path == "leek.exceptions.CallableNotFound"
        assert f"Cannot import {rows[task_id].callable_path}" in rows[task_id].traceback
    assert not Row.objects.filter(n=-1).exists()


def test_unknown_and_malformed_ids_do_not_exist(notified_nowhere):
    offloaded = tasks.add.offload(1, 2).id  # a pickled row is not a Django Tasks result
    backend = djtasks.Task.get_backend(dt_tasks.add)
    for result_id in ["999999", "abc", "", "1; DROP TABLE x", "-1", "1.0", str(offloaded)]:
        with pytest.raises(djtasks.TaskResultDoesNotExist):
            backend.get_result(result_id)
        with pytest.raises(djtasks.TaskResultDoesNotExist):
            asyncio.run(backend.aget_result(result_id))


def test_aenqueue_and_aget_result(start_server):
    start_server()

    async def enqueue_then_wait():
        result = await dt_tasks.add.aenqueue(1, 1)
        read = await dt_tasks.add.aget_result(result.id)
        # A worker may have started it already.
        assert (read.id, read.args, read.enqueued_at) == (result.id, [1, 1], result.enqueued_at)
        for _ in range(3000):
            await result.arefresh()
            if result.is_finished:
                return result
            await asyncio.sleep(0.02)
        return result

    result = asyncio.run(enqueue_then_wait())
    assert result.status == Status.SUCCESSFUL
    assert result.return_value == 2


def test_a_deferred_task_waits_for_its_run_after(start_server):
    start_server()
    when = timezone.now() + timedelta(seconds=2)
    result = dt_tasks.write_row.using(run_after=when).enqueue(1)
    assert result.task.run_after == when
    assert holds_for(lambda: not Row.objects.exists(), 1.0)
    finished(result)
    assert result.started_at >= when
    assert result.task.run_after == when


def test_queue_names_are_pools(start_server):
    start_server("--pool", "default", workers=1)
    stuck = dt_tasks.in_email_queue.enqueue()
    ran = finished(dt_tasks.add.enqueue(1, 2))
    assert ran.status == Status.SUCCESSFUL
    assert Task.objects.get(pk=int(stuck.id)).pool == "emails"
    assert holds_for(lambda: (stuck.refresh(), stuck.status == Status.READY)[1], 1.0)
    with pytest.raises(djtasks.InvalidTask, match="Queue 'nowhere' is not valid"):
        dt_tasks.add.using(queue_name="nowhere").enqueue(1, 2)


def test_enqueue_many_saves_in_batches_and_notifies_once(notified_nowhere):
    backend = djtasks.Task.get_backend(dt_tasks.add)
    calls = [(i, 1) for i in range(1100)] + [{"a": 1, "b": 1}]
    with CaptureQueriesContext(connection) as queries:
        results = backend.enqueue_many(dt_tasks.add, calls)
    inserts = [q for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 3  # 500 + 500 + 101
    assert len(results) == 1101
    assert [int(r.id) for r in results] == sorted(int(r.id) for r in results)
    assert results[-1].kwargs == {"a": 1, "b": 1}
    assert len(notified_nowhere) == 1
    assert len(notified_nowhere[0]) == 1101
    assert results[5] == backend.get_result(results[5].id)


def test_leek_options_from_the_task_and_from_options(start_server, settings):
    start_server()
    timed_out = finished(dt_tasks.sleep_past_own_timeout.enqueue(30))
    assert timed_out.status == Status.FAILED
    assert timed_out.errors[0].exception_class_path == "leek.exceptions.TaskTimedOut"
    assert Task.objects.get(pk=int(timed_out.id)).timeout == 1

    settings.TASKS = {
        "default": {"BACKEND": "leek.backend.LeekBackend", "OPTIONS": {"retries": 1}}
    }
    from tests import dt_tasks as again  # the same task objects, now on the new backend

    result = again.raise_value_error.enqueue()
    row = Task.objects.get(pk=int(result.id))
    assert (row.retries, row.retry_backoff, row.lost_retries) == (1, 1.0, 0)
    assert Task.objects.get(pk=int(again.always_fail.enqueue().id)).retries == 1


def test_unique_keys_limits_and_snooze_hold_for_django_tasks(start_server):
    # A unique key: the second enqueue saves nothing, returns the holder's result and sends
    # no task_enqueued signal; inside an atomic block as well.
    enqueued = []

    def receiver(sender, task_result, **kwargs):
        enqueued.append(task_result.id)

    djtasks.signals.task_enqueued.connect(receiver)
    try:
        with transaction.atomic():
            first = dt_tasks.build_report.enqueue(5, 0.2)
            again = dt_tasks.build_report.enqueue(5, 0.3)
        many = dt_tasks.build_report.get_backend().enqueue_many(
            dt_tasks.build_report, [(5, 0.4), (6, 0.2), (6, 0.5)]
        )
    finally:
        djtasks.signals.task_enqueued.disconnect(receiver)
    assert (again.id, again.args) == (first.id, [5, 0.2])  # the holder's own result
    assert Task.objects.filter(unique_key="dt-report-5").count() == 1
    assert [(r.id, r.args) for r in many] == [
        (first.id, [5, 0.2]), (many[1].id, [6, 0.2]), (many[1].id, [6, 0.2])
    ]  # fmt: skip
    assert enqueued == [first.id, many[1].id]  # one signal per task saved
    # An .offload() holding the same key: nothing is enqueued, and the error says why.
    tasks.add.using(unique_key="dt-report-7").offload(1, 2)
    with pytest.raises(djtasks.InvalidTask, match="held by task .* tests.tasks.add"):
        dt_tasks.build_report.enqueue(7, 0.1)
    # max_concurrency=1 over two workers: never two at once.
    spans = [dt_tasks.one_at_a_time.enqueue(i, 0.1) for i in range(6)]
    snoozed = dt_tasks.snooze_first_time.enqueue(77, 0.3)
    start_server(workers=2)
    assert finished(first).return_value == 5
    assert Row.objects.filter(n=5).count() == 1
    intervals = sorted(finished(r).return_value for r in spans)
    for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False):
        assert end <= start, intervals
    # A snooze spends no attempt, and is no error.
    done = finished(snoozed)
    assert done.status == Status.SUCCESSFUL
    assert done.errors == []
    assert len(done.worker_ids) == 2
    assert Task.objects.get(pk=int(done.id)).attempts == 1


def test_bad_leek_options_are_refused(settings):
    with pytest.raises(djtasks.InvalidTask, match="retries=-1"):
        djtasks.task(retries=-1)(dt_tasks.add.func)
    settings.TASKS = {"default": {"BACKEND": "leek.backend.LeekBackend", "OPTIONS": {"retry": 1}}}
    with pytest.raises(ImproperlyConfigured, match="'retry', which is not a leek option"):
        dt_tasks.add.enqueue(1, 2)


def test_eager_mode_runs_at_once(settings):
    settings.LEEK = {**settings.LEEK, "eager": True}
    result = dt_tasks.report_context.enqueue(1)
    assert result.status == Status.SUCCESSFUL
    assert result.return_value["attempt"] == 1
    assert result.return_value["pid"] == os.getpid()


def test_the_admin_reads_a_json_row_as_python(settings):
    from django.contrib.auth.models import User
    from django.test import Client

    settings.LEEK = {**settings.LEEK, "eager": True}
    result = dt_tasks.add.enqueue("marker-left-", b="marker-right")
    assert result.return_value == "marker-left-marker-right"
    User.objects.filter(username="backend-admin").delete()
    browser = Client()
    browser.force_login(User.objects.create_superuser("backend-admin", "a@example.com", "pw"))
    response = browser.get(f"/admin/leek/task/{result.id}/change/")
    text = response.content.decode()
    assert response.status_code == 200
    # The call and the return value, read from their JSON, as Python.
    assert "tests.dt_tasks.add(&#x27;marker-left-&#x27;, b=&#x27;marker-right&#x27;)" in text
    assert "&#x27;marker-left-marker-right&#x27;" in text
    assert "cannot be read" not in text
    assert Task.objects.get(pk=int(result.id)).return_value == "marker-left-marker-right"


def test_checks_name_the_fix(settings):
    from django.core import checks

    def found(check_id):
        return [m for m in checks.run_checks() if m.id == check_id]

    assert found("leek.W002") == []
    settings.LEEK = {**settings.LEEK, "pools": ["default"]}
    [warning] = found("leek.W002")
    assert "'emails'" in warning.msg
    assert "LEEK['pools']" in warning.hint
    backend = djtasks.Task.get_backend(dt_tasks.add)
    assert backend.check() == [warning]

    settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a != "leek"]
    [error] = found("leek.E006")
    assert "'leek' is not in INSTALLED_APPS" in error.msg
    assert error.hint == "Add 'leek' to INSTALLED_APPS and run manage.py migrate."
