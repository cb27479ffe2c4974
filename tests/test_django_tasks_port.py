# Ported from Django's tests/tasks/ (Django 6.1.3), under Django's licence:
#
# Copyright (c) Django Software Foundation and individual contributors.
# All rights reserved.
#
# Redistribution and use in source and binary forms, with or without modification,
# are permitted provided that the following conditions are met:
#
#     1. Redistributions of source code must retain the above copyright notice,
#        this list of conditions and the following disclaimer.
#
#     2. Redistributions in binary form must reproduce the above copyright
#        notice, this list of conditions and the following disclaimer in the
#        documentation and/or other materials provided with the distribution.
#
#     3. Neither the name of Django nor the names of its contributors may be used
#        to endorse or promote products derived from this software without
#        specific prior written permission.
#
# THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND
# ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED
# WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
# DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT OWNER OR CONTRIBUTORS BE LIABLE FOR
# ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES
# (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES;
# LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON
# ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT
# (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE OF THIS
# SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
"""Django's own tests of the Tasks framework (tests/tasks/), run against leek's backend.

The cases that apply to a backend with a worker and a store: test_tasks.py (the Task API,
with LeekBackend where Django uses its DummyBackend), test_immediate_backend.py (running
tasks: here a real `manage.py leek` server runs them and the results are read back), and
the parts of test_dummy_backend.py and test_custom_backend.py about results, validation and
`task_class`. Backend-specific cases (ImmediateBackend's logs in-process, KeyboardInterrupt,
DummyBackend's in-memory list, "cannot get result") do not apply.
"""

import asyncio
import dataclasses
import logging
import pickle
from datetime import datetime
from unittest import mock

import pytest
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

djtasks = pytest.importorskip("leek.djtasks", reason="neither django.tasks nor django_tasks")

from leek import client  # noqa: E402
from leek.backend import LeekBackend, LeekTask  # noqa: E402
from tests import dt_port_tasks as test_tasks  # noqa: E402
from tests.conftest import wait_until  # noqa: E402

Status = djtasks.TaskResultStatus
task = djtasks.task
InvalidTask = djtasks.InvalidTask
TaskResultDoesNotExist = djtasks.TaskResultDoesNotExist
DJANGO = djtasks.FRAMEWORK == "django.tasks"
if DJANGO:
    from django.tasks import default_task_backend, task_backends
    from django.tasks.exceptions import InvalidTaskBackend, TaskResultMismatch
else:
    from django_tasks import default_task_backend, task_backends
    from django_tasks.exceptions import InvalidTaskBackendError as InvalidTaskBackend
    from django_tasks.exceptions import TaskResultMismatch
only_django = pytest.mark.skipif(not DJANGO, reason="Django 6's behaviour, not the backport's")

LEEK = "leek.backend.LeekBackend"
# An id no row has (Django's tests use "123", which a table of this run may hold).
MISSING_ID = "9" * 18


@pytest.fixture(autouse=True)
def tasks_settings(settings):
    settings.TASKS = {
        "default": {"BACKEND": LEEK, "QUEUES": ["default", "queue_1"]},
        "any_queue": {"BACKEND": LEEK, "QUEUES": []},
        "missing": {"BACKEND": "does.not.exist"},
    }
    return settings


@pytest.fixture
def no_server(monkeypatch):
    """The rows are saved and nobody runs them: Django's DummyBackend's cases."""
    monkeypatch.setattr(client, "notify", lambda pool, priority, ids: True)


def run(result, timeout=60):
    """Wait for a real server to finish the task; return the refreshed result."""
    wait_until(lambda: (result.refresh(), result.is_finished)[1], timeout, f"task {result.id}")
    return result


# test_tasks.py


def test_using_correct_backend():
    assert default_task_backend == task_backends["default"]
    assert isinstance(task_backends["default"], LeekBackend)
    assert default_task_backend.alias == "default"
    assert default_task_backend.options == {}


def test_task_decorator():
    assert isinstance(test_tasks.noop_task, djtasks.Task)
    assert isinstance(test_tasks.noop_task_async, djtasks.Task)
    assert isinstance(test_tasks.noop_task_from_bare_decorator, djtasks.Task)


def test_enqueue_task(no_server):
    result = test_tasks.noop_task.enqueue()
    assert result.status == Status.READY
    assert result.task == test_tasks.noop_task
    assert result.args == []
    assert result.kwargs == {}


def test_enqueue_task_async(no_server):
    result = asyncio.run(test_tasks.noop_task.aenqueue())
    assert result.status == Status.READY
    assert result.task == test_tasks.noop_task
    assert result.args == []
    assert result.kwargs == {}


def test_enqueue_with_invalid_argument(no_server):
    with pytest.raises(TypeError, match="Unsupported type"):
        test_tasks.noop_task.enqueue(datetime.now())
    with pytest.raises(TypeError, match="Unsupported type"):
        asyncio.run(test_tasks.noop_task.aenqueue(datetime.now()))


def test_using_priority_queue_name_and_run_after():
    assert test_tasks.noop_task.priority == 0
    assert test_tasks.noop_task.using(priority=1).priority == 1
    assert test_tasks.noop_task.priority == 0
    assert test_tasks.noop_task.queue_name == "default"
    assert test_tasks.noop_task.using(queue_name="queue_1").queue_name == "queue_1"
    assert test_tasks.noop_task.queue_name == "default"
    now = timezone.now()
    assert test_tasks.noop_task.run_after is None
    assert test_tasks.noop_task.using(run_after=now).run_after == now
    assert test_tasks.noop_task.run_after is None


def test_using_unknown_and_missing_backend():
    assert test_tasks.noop_task.backend == "default"
    with pytest.raises(InvalidTaskBackend, match="The connection 'unknown' doesn't exist."):
        test_tasks.noop_task.using(backend="unknown")
    with pytest.raises(
        InvalidTaskBackend, match="Could not find backend 'does.not.exist': No module named 'does'"
    ):
        test_tasks.noop_task.using(backend="missing")


def test_using_creates_new_instance_and_chains():
    new_task = test_tasks.noop_task.using()
    assert new_task == test_tasks.noop_task
    assert new_task is not test_tasks.noop_task
    now = timezone.now()
    run_after_task = test_tasks.noop_task.using(run_after=now)
    priority_task = run_after_task.using(priority=10)
    assert priority_task.priority == 10
    assert priority_task.run_after == now
    assert run_after_task.priority == 0


def test_refresh_result(no_server):
    result = asyncio.run(test_tasks.noop_task.aenqueue())
    original_result = dataclasses.asdict(result)
    result.refresh()
    assert dataclasses.asdict(result) == original_result
    asyncio.run(result.arefresh())
    assert dataclasses.asdict(result) == original_result


def test_naive_datetime():
    with pytest.raises(InvalidTask, match="run_after must be an aware datetime."):
        test_tasks.noop_task.using(run_after=datetime.now())


def test_invalid_priority():
    message = "priority must be a whole number between -100 and 100."
    for priority in (-101, 101, 3.1):
        with pytest.raises(InvalidTask, match=message):
            test_tasks.noop_task.using(priority=priority)
    for priority in (100, -100, 0):
        test_tasks.noop_task.using(priority=priority)


def test_unknown_queue_name():
    with pytest.raises(InvalidTask, match="Queue 'queue-2' is not valid for backend."):
        test_tasks.noop_task.using(queue_name="queue-2")
    # Validation is bypassed when the backend QUEUES is an empty list.
    assert (
        test_tasks.noop_task.using(queue_name="queue-2", backend="any_queue").queue_name
        == "queue-2"
    )


def test_call_task():
    assert test_tasks.calculate_meaning_of_life.call() == 42
    assert asyncio.run(test_tasks.calculate_meaning_of_life.acall()) == 42
    assert asyncio.run(test_tasks.noop_task_async.acall()) is None
    assert test_tasks.noop_task_async.call() is None


def test_get_result(no_server):
    result = default_task_backend.enqueue(test_tasks.noop_task, (), {})
    assert test_tasks.noop_task.get_result(result.id) == result
    result = asyncio.run(default_task_backend.aenqueue(test_tasks.noop_task, (), {}))
    assert asyncio.run(test_tasks.noop_task.aget_result(result.id)) == result


def test_get_missing_result():
    with pytest.raises(TaskResultDoesNotExist):
        test_tasks.noop_task.get_result(MISSING_ID)
    with pytest.raises(TaskResultDoesNotExist):
        asyncio.run(test_tasks.noop_task.aget_result(MISSING_ID))


def test_get_incorrect_result(no_server):
    result = default_task_backend.enqueue(test_tasks.noop_task_async, (), {})
    with pytest.raises(TaskResultMismatch, match="Task does not match"):
        test_tasks.noop_task.get_result(result.id)
    with pytest.raises(TaskResultMismatch, match="Task does not match"):
        asyncio.run(test_tasks.noop_task.aget_result(result.id))


def test_invalid_function():
    def nested():
        pass

    for invalid_function in [any, nested]:
        with pytest.raises(InvalidTask, match="Task function must be defined at a module level."):
            task()(invalid_function)


def test_get_backend():
    assert test_tasks.noop_task.backend == "default"
    assert isinstance(test_tasks.noop_task.get_backend(), LeekBackend)
    other = test_tasks.noop_task.using(backend="any_queue")
    assert other.backend == "any_queue"
    assert other.get_backend() is task_backends["any_queue"]


def test_name_and_module_path():
    assert test_tasks.noop_task.name == "noop_task"
    assert test_tasks.noop_task_async.name == "noop_task_async"
    assert test_tasks.noop_task.module_path == "tests.dt_port_tasks.noop_task"
    assert import_string(test_tasks.noop_task.module_path) is test_tasks.noop_task
    assert import_string(test_tasks.noop_task_async.module_path) is test_tasks.noop_task_async


@only_django
def test_pickle_task_and_unpickle_only_tasks():
    assert pickle.loads(pickle.dumps(test_tasks.noop_task)) == test_tasks.noop_task
    for path in ("does.not.exist.fake_task", "builtins.any"):
        with pytest.raises(ValueError, match=f"Expected '{path}' to point to a Task instance."):
            djtasks.Task._reconstruct({"func": path})


@only_django
def test_pickle_task_result(no_server):
    result = test_tasks.noop_task.enqueue()
    assert pickle.loads(pickle.dumps(result)) == result


def test_no_backends(tasks_settings):
    tasks_settings.TASKS = {}
    with pytest.raises(InvalidTaskBackend):
        test_tasks.noop_task.enqueue()


def test_task_error_invalid_exception_and_unknown_module(start_server):
    start_server()
    result = run(test_tasks.failing_task_value_error.enqueue())
    assert len(result.errors) == 1
    object.__setattr__(result.errors[0], "exception_class_path", "subprocess.run")
    with pytest.raises(ValueError, match="'subprocess.run' does not reference a valid exception."):
        result.errors[0].exception_class  # noqa: B018
    object.__setattr__(result.errors[0], "exception_class_path", "does.not.exist")
    with pytest.raises(ImportError):
        result.errors[0].exception_class  # noqa: B018


def test_takes_context_without_taking_context():
    with pytest.raises(
        InvalidTask, match="Task takes context but does not have a first argument of 'context'."
    ):
        task(takes_context=True)(test_tasks.calculate_meaning_of_life.func)


@only_django
def test_run_after_in_decorator():
    message = "run_after cannot be defined statically with the @task decorator."
    with pytest.raises(TypeError, match=message):
        task(run_after=timezone.now())(test_tasks.calculate_meaning_of_life.func)


# test_immediate_backend.py: the tasks run, here in a real server's workers.


def test_run_enqueued_task(start_server):
    start_server()
    for noop in [test_tasks.noop_task, test_tasks.noop_task_async]:
        result = run(noop.enqueue(1, two=3))
        assert result.status == Status.SUCCESSFUL
        assert result.is_finished is True
        assert result.started_at is not None
        assert result.last_attempted_at is not None
        assert result.finished_at is not None
        assert result.started_at >= result.enqueued_at
        assert result.finished_at >= result.started_at
        assert result.return_value is None
        assert result.task == noop
        assert result.args == [1]
        assert result.kwargs == {"two": 3}
        assert result.attempts == 1


def test_catches_exception(start_server):
    start_server()
    cases = [
        (test_tasks.failing_task_value_error, ValueError, "This Task failed due to ValueError"),
        (test_tasks.failing_task_system_exit, SystemExit, "This Task failed due to SystemExit"),
    ]
    for failing, exception, message in cases:
        result = run(failing.enqueue())
        assert result.status == Status.FAILED
        with pytest.raises(ValueError, match="Task failed"):
            result.return_value  # noqa: B018
        assert result.is_finished is True
        assert result.started_at is not None
        assert result.last_attempted_at is not None
        assert result.finished_at >= result.started_at >= result.enqueued_at
        assert result.errors[0].exception_class == exception
        assert result.errors[0].traceback.endswith(f"{exception.__name__}: {message}\n")
        assert result.task == failing
        assert result.args == []
        assert result.kwargs == {}


def test_complex_exception_and_exit(start_server):
    start_server()
    result = run(test_tasks.complex_exception.enqueue())
    assert result.status == Status.FAILED
    assert result._return_value is None
    assert result.errors[0].exception_class is ValueError
    assert 'ValueError(ValueError("This task failed"))' in result.errors[0].traceback
    exited = run(test_tasks.exit_task.enqueue())
    assert exited.status == Status.FAILED
    assert exited.errors[0].exception_class is SystemExit


def test_complex_return_value(start_server):
    start_server()
    result = run(test_tasks.complex_return_value.enqueue())
    assert result.status == Status.FAILED
    assert result.finished_at >= result.started_at >= result.enqueued_at
    assert result._return_value is None
    assert result.errors[0].exception_class is TypeError
    assert "Unsupported type" in result.errors[0].traceback


def test_result(start_server):
    start_server()
    result = run(default_task_backend.enqueue(test_tasks.calculate_meaning_of_life, [], {}))
    assert result.status == Status.SUCCESSFUL
    assert result.return_value == 42
    result = asyncio.run(
        default_task_backend.aenqueue(test_tasks.calculate_meaning_of_life, [], {})
    )
    assert run(result).return_value == 42


def test_takes_context_and_context(start_server):
    start_server()
    result = run(test_tasks.get_task_id.enqueue())
    assert result.return_value == result.id
    assert run(test_tasks.test_context.enqueue(1)).status == Status.SUCCESSFUL


def test_validate_on_enqueue(tasks_settings):
    tasks_settings.TASKS = {"default": {"BACKEND": LEEK, "QUEUES": []}}
    task_with_custom_queue_name = test_tasks.noop_task.using(queue_name="unknown_queue")
    tasks_settings.TASKS = {"default": {"BACKEND": LEEK, "QUEUES": ["queue-1"]}}
    with pytest.raises(InvalidTask, match="Queue 'unknown_queue' is not valid for backend"):
        task_with_custom_queue_name.enqueue()
    with pytest.raises(InvalidTask, match="Queue 'unknown_queue' is not valid for backend"):
        asyncio.run(task_with_custom_queue_name.aenqueue())


def test_enqueue_logs(no_server, caplog):
    with caplog.at_level(logging.DEBUG, logger=djtasks.signals.logger.name):
        result = test_tasks.noop_task.enqueue()
    [record] = [r for r in caplog.records if r.name == djtasks.signals.logger.name]
    assert "enqueued" in record.getMessage()
    assert result.id in record.getMessage()


def test_enqueue_in_a_transaction_runs_after_commit(start_server):
    # Django's ImmediateBackend does not wait for the commit; leek saves the row in the
    # transaction and runs it once it commits (and never if it rolls back).
    start_server()
    with transaction.atomic():
        result = test_tasks.calculate_meaning_of_life.enqueue()
        assert result.enqueued_at is not None
        assert result.status == Status.READY
    assert run(result).return_value == 42


# test_dummy_backend.py: what applies to any backend that stores results.


def test_errors_check_and_disallowed_async_task(no_server):
    assert test_tasks.noop_task.enqueue().errors == []
    assert default_task_backend.check() == []
    with (
        mock.patch.multiple(default_task_backend, supports_async_task=False),
        pytest.raises(InvalidTask, match="(?i)Backend does not support async Tasks."),
    ):
        default_task_backend.validate_task(test_tasks.noop_task_async)


# test_custom_backend.py: task_class with extra fields, here leek's own options.


def test_custom_task_default_values():
    assert isinstance(test_tasks.noop_task, LeekTask)
    assert test_tasks.noop_task.timeout is None
    assert test_tasks.noop_task.retries is None


def test_custom_task_with_custom_values():
    declared = task(timeout=5, retries=2)(test_tasks.calculate_meaning_of_life.func)
    assert isinstance(declared, LeekTask)
    assert (declared.timeout, declared.retries) == (5, 2)
    assert declared.priority == 0
    declared = task(priority=10, retry_backoff=0.5)(test_tasks.calculate_meaning_of_life.func)
    assert (declared.priority, declared.retry_backoff) == (10, 0.5)


def test_custom_task_invalid_kwarg():
    with pytest.raises(TypeError, match="unexpected keyword argument 'unknown_param'"):
        task(unknown_param=123)(test_tasks.calculate_meaning_of_life.func)
