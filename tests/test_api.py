"""The public API in this process, with no server: offload, handles, options, eager mode."""

import contextlib
import logging
import os
import socket
import tempfile
from datetime import datetime, timedelta
from unittest import mock

import pytest
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

import leek
from leek import api, client, conf, serialize
from leek.exceptions import (
    LeekError,
    TaskFailed,
    TaskNotFinished,
    TaskTimeout,
    UnpicklableError,
)
from leek.models import Task, TaskStatus
from tests import tasks
from tests.models import Row


@pytest.fixture(autouse=True)
def leek_settings():
    """Return a function that changes settings.LEEK until the end of the test.

    Through override_settings(LEEK=...), which sends `setting_changed`, so that leek.conf
    drops its cached value on the way in and on the way out. Every test starts from the
    test settings (the client pointed at port 1, where nothing listens).
    """
    from django.conf import settings

    with contextlib.ExitStack() as stack:

        def change(**changes):
            stack.enter_context(override_settings(LEEK={**settings.LEEK, **changes}))
            return conf.get()

        change()
        assert conf.get().port == 1
        yield change


@pytest.fixture
def eager(leek_settings):
    assert leek_settings(eager=True).eager


@pytest.fixture
def fresh_notifier(monkeypatch):
    """A client that has not failed lately, so it is not in its back-off."""
    notifier = client.Notifier()
    monkeypatch.setattr(client, "_notifier", notifier)
    return notifier


@pytest.fixture
def notified(monkeypatch):
    """Record the notifications instead of sending them."""
    calls = []
    monkeypatch.setattr(
        client, "notify", lambda pool, priority, ids: calls.append((pool, priority, list(ids)))
    )
    return calls


# --- what cannot be pickled -----------------------------------------------------------------


def test_an_open_file_argument_is_named_and_nothing_is_saved():
    with (
        tempfile.TemporaryFile() as open_file,
        pytest.raises(UnpicklableError, match="argument 1") as caught,
    ):
        tasks.add.offload(1, open_file)
    assert isinstance(caught.value, TypeError)
    assert isinstance(caught.value, LeekError)
    assert "tests.tasks.add" in str(caught.value)
    assert Task.objects.count() == 0


def test_a_lambda_keyword_argument_is_named_and_nothing_is_saved():
    with pytest.raises(UnpicklableError, match="argument 'b'"):
        tasks.add.offload(1, b=lambda: 2)
    assert Task.objects.count() == 0


def test_a_socket_argument_is_named_and_nothing_is_saved():
    with socket.socket() as sock, pytest.raises(TypeError, match="argument 0") as caught:
        tasks.add.offload(sock, 2)
    assert isinstance(caught.value, UnpicklableError)
    assert "socket" in str(caught.value)
    assert Task.objects.count() == 0


def test_the_first_bad_argument_among_good_ones_is_named():
    with pytest.raises(UnpicklableError, match="argument 'b'") as caught:
        api.push_task_to_queue(tasks.add, 1, b=(x for x in ()))
    assert "argument 0" not in str(caught.value)
    assert Task.objects.count() == 0


def test_a_lambda_task_is_named():
    with pytest.raises(UnpicklableError, match="<lambda>"):
        api.push_task_to_queue(lambda: 1)
    assert Task.objects.count() == 0


def test_a_local_function_task_is_named():
    @leek.Leek().task
    def local_helper():
        return 1

    with pytest.raises(UnpicklableError, match="local_helper"):
        local_helper.offload()
    with pytest.raises(UnpicklableError, match="local_helper"):
        api.push_task_to_queue(local_helper)
    assert Task.objects.count() == 0


# --- eager mode -----------------------------------------------------------------------------


@pytest.mark.usefixtures("eager")
def test_eager_runs_at_once_in_this_process():
    handle = tasks.return_pid.offload()
    assert handle.status == TaskStatus.SUCCESSFUL
    assert handle.is_finished
    assert handle.return_value == os.getpid()
    row = Task.objects.get(pk=handle.id)
    assert row.status == TaskStatus.SUCCESSFUL
    assert row.worker_pid == os.getpid()
    assert row.worker_host == socket.gethostname()
    assert row.attempts == 1
    assert row.started_at is not None
    assert row.finished_at is not None
    assert handle.error == ""


@pytest.mark.usefixtures("eager")
def test_eager_side_effects_happen_before_offload_returns():
    tasks.write_row.offload(7)
    assert list(Row.objects.values_list("n", "pid")) == [(7, os.getpid())]


@pytest.mark.usefixtures("eager")
def test_eager_failure():
    handle = tasks.raise_value_error.offload("no good")
    assert handle.status == TaskStatus.FAILED
    assert "ValueError" in handle.error
    assert "no good" in handle.error
    assert "Traceback" in handle.traceback
    assert handle.task.exception_class_path == "builtins.ValueError"
    with pytest.raises(TaskFailed, match="ValueError") as caught:
        handle.return_value  # noqa: B018 - the property raises
    assert caught.value.task.pk == handle.id


@pytest.mark.usefixtures("eager")
def test_eager_unpicklable_return_value_fails_the_task():
    handle = tasks.return_unpicklable.offload()
    assert handle.status == TaskStatus.FAILED
    assert "return value" in handle.error


@pytest.mark.usefixtures("eager")
def test_eager_does_not_notify(notified):
    tasks.add.offload(1, 2)
    assert notified == []


def test_the_seed_recipe_patches_push_task_to_queue():
    with mock.patch("leek.api.push_task_to_queue", lambda fn, *a, **kw: fn(*a, **kw)):
        assert tasks.add.offload(2, 3) == 5
        assert tasks.add.using(priority=3).offload(4, b=5) == 9
    assert Task.objects.count() == 0


# --- the row offload saves ------------------------------------------------------------------


def test_push_task_to_queue_saves_a_ready_row(notified):
    handle = leek.push_task_to_queue(tasks.add, 1, 2)
    row = Task.objects.get(pk=handle.id)
    assert row.status == TaskStatus.READY
    assert row.callable_path == "tests.tasks.add"
    assert row.pool == "default"
    assert row.priority == 0
    assert row.attempts == 0
    assert row.run_after <= timezone.now()
    assert handle.status == TaskStatus.READY
    assert not handle.is_finished
    # Outside a transaction, the notification goes at once.
    assert notified == [("default", 0, [handle.id])]


def test_offload_of_a_plain_function_uses_the_defaults(notified):
    handle = leek.push_task_to_queue(os.getpid)
    row = Task.objects.get(pk=handle.id)
    assert row.callable_path == "posix.getpid"
    assert row.pool == "default"


def test_using_sets_the_row_and_leaves_the_task_alone(notified):
    before = timezone.now()
    handle = tasks.add.using(priority=7, pool="emails", run_after=timedelta(seconds=60)).offload(
        1, 2
    )
    after = timezone.now()
    row = Task.objects.get(pk=handle.id)
    assert row.priority == 7
    assert row.pool == "emails"
    assert before + timedelta(seconds=60) <= row.run_after <= after + timedelta(seconds=60)
    # A delayed task is not announced; the sweep finds it when it is due.
    assert notified == []
    # The task's own defaults did not change.
    assert tasks.add.leek.options == api.TaskOptions()
    plain = Task.objects.get(pk=tasks.add.offload(1, 2).id)
    assert (plain.pool, plain.priority) == ("default", 0)
    assert plain.run_after <= timezone.now()


def test_using_an_aware_datetime(notified):
    when = timezone.now() + timedelta(days=1)
    row = Task.objects.get(pk=tasks.add.using(run_after=when).offload(1, 2).id)
    assert row.run_after == when


def test_decorator_options():
    assert tasks.in_email_pool.leek.options.pool == "emails"
    assert tasks.in_email_pool.leek.options.priority == 5


def test_decorator_options_reach_the_row(notified):
    row = Task.objects.get(pk=tasks.in_email_pool.offload().id)
    assert (row.pool, row.priority) == ("emails", 5)
    assert row.callable_path == "tests.tasks.in_email_pool"
    assert notified == [("emails", 5, [row.pk])]


# --- offload_many ---------------------------------------------------------------------------


def test_offload_many_saves_every_call_in_order_and_notifies_once(notified):
    # More rows than one INSERT takes, dicts and tuples mixed.
    calls = [{"a": n, "b": 1} if n % 2 else (n, 2) for n in range(1234)]
    handles = tasks.add.offload_many(calls)
    ids = [h.id for h in handles]
    assert ids == sorted(ids)
    assert len(set(ids)) == 1234
    rows = list(Task.objects.filter(pk__in=ids).order_by("id"))
    assert [r.status for r in rows] == [TaskStatus.READY] * 1234
    assert {r.callable_path for r in rows} == {"tests.tasks.add"}
    assert notified == [("default", 0, ids)]
    args = [serialize.loads_call(bytes(r.payload), r.callable_path)[1:] for r in rows[:3]]
    assert args == [((0, 2), {}), ((), {"a": 1, "b": 1}), ((2, 2), {})]


def test_offload_many_takes_the_task_options(notified):
    handles = tasks.add.using(priority=4, pool="emails", retries=2).offload_many([(1, 2)] * 3)
    rows = Task.objects.filter(pk__in=[h.id for h in handles])
    assert {(r.pool, r.priority, r.retries) for r in rows} == {("emails", 4, 2)}
    assert notified == [("emails", 4, [h.id for h in handles])]


def test_offload_many_of_nothing_saves_and_sends_nothing(notified):
    assert tasks.add.offload_many([]) == []
    assert notified == []


@pytest.mark.parametrize("bad", [[1, 2], "ab", None])
def test_offload_many_names_an_item_that_is_not_a_call(notified, bad):
    with pytest.raises(TypeError, match="call 1 is a"):
        tasks.add.offload_many([(1, 2), bad])
    assert Task.objects.count() == 0
    assert notified == []


def test_offload_many_with_an_unpicklable_argument_saves_nothing(notified):
    with pytest.raises(UnpicklableError, match="argument 'b'"):
        tasks.add.offload_many([(1, 2), {"a": 1, "b": lambda: 2}])
    assert Task.objects.count() == 0


def test_offload_many_in_a_rolled_back_transaction_leaves_nothing(notified):
    with contextlib.suppress(RuntimeError), transaction.atomic():
        tasks.add.offload_many([(1, 2), (3, 4)])
        raise RuntimeError("roll back")
    assert Task.objects.count() == 0
    assert notified == []


def test_offload_many_in_a_transaction_notifies_on_commit(notified):
    with transaction.atomic():
        handles = tasks.add.offload_many([(1, 2), (3, 4)])
        assert notified == []
    assert notified == [("default", 0, [h.id for h in handles])]


@pytest.mark.usefixtures("eager")
def test_offload_many_in_eager_mode_runs_each_call(notified):
    handles = tasks.add.offload_many([(1, 2), {"a": 3, "b": 4}])
    assert [h.return_value for h in handles] == [3, 7]
    assert notified == []


def test_offload_many_goes_through_a_patched_push_task_to_queue():
    with mock.patch("leek.api.push_task_to_queue", lambda fn, *a, **kw: fn(*a, **kw)):
        assert tasks.add.offload_many([(2, 3), {"a": 1, "b": 1}]) == [5, 2]
    assert Task.objects.count() == 0


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"pool": "has space"}, ValueError),
        ({"pool": ""}, ValueError),
        ({"pool": 3}, ValueError),
        ({"run_after": datetime(2030, 1, 1, 12, 0)}, ValueError),  # noqa: DTZ001 - naive on purpose
        ({"run_after": "tomorrow"}, TypeError),
        ({"priority": "x"}, TypeError),
        ({"priority": True}, TypeError),
        ({"priority": 1.5}, TypeError),
    ],
)
def test_bad_options_raise(options, error):
    key = next(iter(options))
    with pytest.raises(error, match=key):
        tasks.add.using(**options)
    with pytest.raises(error, match=key):
        leek.Leek().task(**options)
    assert Task.objects.count() == 0


def test_an_unknown_option_raises():
    with pytest.raises(TypeError):
        tasks.add.using(queue="emails")


def test_calling_the_function_runs_it_here():
    assert tasks.add(2, 3) == 5
    assert tasks.return_pid() == os.getpid()
    assert tasks.in_email_pool() == "emails"
    assert Task.objects.count() == 0


# --- reading tasks back ---------------------------------------------------------------------


def test_query_task(notified):
    handle = tasks.add.offload(1, 2)
    row = leek.query_task(handle.id)
    assert isinstance(row, Task)
    assert row.pk == handle.id
    assert row.callable_path == "tests.tasks.add"
    with pytest.raises(Task.DoesNotExist):
        leek.query_task(handle.id + 1000)


def test_list_tasks(leek_settings, notified):
    ready = tasks.add.offload(1, 2)
    leek_settings(eager=True)
    done = tasks.add.offload(3, 4)
    failed = tasks.raise_value_error.offload()
    leek_settings(eager=False)
    later = tasks.add.offload(5, 6)
    assert [t.pk for t in leek.list_tasks()] == [ready.id, done.id, failed.id, later.id]
    assert [t.pk for t in leek.list_tasks(finished=True)] == [done.id, failed.id]
    assert [t.pk for t in leek.list_tasks(finished=False)] == [ready.id, later.id]


def test_wait_on_a_ready_task_with_no_server_times_out(notified):
    handle = tasks.add.offload(1, 2)
    with pytest.raises(TaskTimeout) as caught:
        handle.wait(timeout=0.2)
    assert isinstance(caught.value, TimeoutError)
    assert str(handle.id) in str(caught.value)


def test_return_value_of_a_ready_task_raises(notified):
    handle = tasks.add.offload(1, 2)
    with pytest.raises(TaskNotFinished):
        handle.return_value  # noqa: B018 - the property raises
    assert handle.error == ""


def test_refresh_sees_a_change_in_the_row(notified):
    handle = tasks.add.offload(1, 2)
    Task.objects.filter(pk=handle.id).update(status=TaskStatus.RUNNING)
    assert handle.status == TaskStatus.READY  # as last read
    assert handle.refresh().status == TaskStatus.RUNNING


# --- no server, and transactions ------------------------------------------------------------


def test_no_server_logs_one_warning_and_offload_returns(caplog, fresh_notifier):
    with caplog.at_level(logging.WARNING, logger="leek.client"):
        handle = tasks.add.offload(1, 2)
    assert Task.objects.get(pk=handle.id).status == TaskStatus.READY
    warnings = [r for r in caplog.records if r.name == "leek.client"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert str(handle.id) in warnings[0].getMessage()
    assert "READY" in warnings[0].getMessage()


def test_rolled_back_offload_leaves_no_row_and_sends_nothing(notified):
    seen = []

    def offload_then_fail():
        with transaction.atomic():
            handle = tasks.add.offload(1, 2)
            seen.append(Task.objects.filter(pk=handle.id).exists())
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError, match="roll back"):
        offload_then_fail()
    assert seen == [True]
    assert Task.objects.count() == 0
    assert notified == []


def test_offload_in_a_transaction_notifies_on_commit(notified):
    with transaction.atomic():
        handle = tasks.add.offload(1, 2)
        assert notified == []
    assert notified == [("default", 0, [handle.id])]
    assert Task.objects.get(pk=handle.id).status == TaskStatus.READY


def test_handle_repr_names_the_task(notified):
    handle = tasks.add.offload(1, 2)
    text = repr(handle)
    assert str(handle.id) in text
    assert "tests.tasks.add" in text
