"""The worker side of the Django Tasks backend: run one claimed JSON row as Django would.

Runs in a worker process (and in the web process in eager mode), called by
`leek.runner.execute` for rows whose encoding is JSON. It resolves the stored path and runs
it only if it names a django.tasks `Task` (never an arbitrary callable), passes a
`TaskContext` to `takes_context` tasks, runs `async def` tasks to completion, and sends
`task_started` and `task_finished` here, in the process that runs the task. The outcome is
recorded by the worker loop, as every task's is.
"""

from __future__ import annotations

import traceback

from django.utils import timezone

from leek import results, runner, serialize
from leek.djtasks import TaskContext, TaskError, TaskResult, TaskResultStatus, normalize_json
from leek.djtasks import signals as django_signals
from leek.exceptions import NotATask
from leek.hotpath import Claimed
from leek.models import Task as Row
from leek.models import TaskStatus


def execute(task: Claimed, started: float) -> runner.Outcome:
    """Run a claimed JSON row; return its outcome, not yet recorded."""
    try:
        found = results.resolve(task.callable_path)
    except LookupError as exc:
        error = NotATask(f"task {task.task_id}: {exc}")
        path = runner.class_path(error)
        return runner.failed(task, started, path, f"{path}: {error}")
    try:
        row = Row.objects.using(runner.database()).get(pk=task.task_id)
        result = results.to_result(row, found.backend, found)
    except Exception as exc:  # noqa: BLE001 - a row that cannot be read FAILS, with why
        return runner.failed(task, started, runner.class_path(exc), traceback.format_exc())
    django_task = result.task
    sender = type(django_task.get_backend())
    django_signals.task_started.send_robust(sender, task_result=result)
    try:
        args, kwargs = result.args, result.kwargs
        if django_task.takes_context:
            value = django_task.call(TaskContext(task_result=result), *args, **kwargs)
        else:
            value = django_task.call(*args, **kwargs)
        value = normalize_json(value)
        data = serialize.dumps_json(value)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - as Django's backends: SystemExit fails it
        outcome = runner.raised(task, started, exc)
        if outcome.status == TaskStatus.FAILED:
            error = TaskError(exception_class_path=outcome.class_path, traceback=outcome.text)
            result.errors.append(error)
            _finished(sender, result, TaskResultStatus.FAILED)
        return outcome
    object.__setattr__(result, "_return_value", value)
    _finished(sender, result, TaskResultStatus.SUCCESSFUL)
    return runner.succeeded(task, started, data)


def _finished(sender: type, result: TaskResult, status: TaskResultStatus) -> None:
    """Send task_finished with the result as the worker is about to record it."""
    object.__setattr__(result, "status", status)
    object.__setattr__(result, "finished_at", timezone.now())
    django_signals.task_finished.send_robust(sender, task_result=result)
