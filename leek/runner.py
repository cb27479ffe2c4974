"""Run one task: claim its row, load the call, run it, record the outcome.

Runs in a worker process, and in the web process itself in eager mode. Whatever the task
does, the row ends SUCCESSFUL or FAILED with the reason; only the death of the process can
leave it RUNNING, which is the supervisor's business.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from leek import serialize
from leek.exceptions import CallableNotFound, UnpicklableError
from leek.models import Task, TaskStatus


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended; `status` is None when the task was not there to claim."""

    task_id: int
    callable_path: str
    status: TaskStatus | None
    duration: float
    error: str = ""


def _class_path(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def run(
    task_id: int,
    pid: int,
    host: str,
    on_start: Callable[[str, float | None], None] | None = None,
) -> Outcome:
    """Claim and run the task; `on_start(callable_path, timeout)` is called once claimed."""
    if not Task.objects.claim(task_id, pid, host):
        return Outcome(task_id, "", None, 0.0)
    task = Task.objects.only(
        "payload", "callable_path", "timeout", "attempts", "retries", "retry_backoff"
    ).get(id=task_id)
    path = task.callable_path
    if on_start is not None:
        on_start(path, task.timeout)
    started = time.monotonic()
    try:
        fn, args, kwargs = serialize.loads_call(bytes(task.payload), path)
        value = fn(*args, **kwargs)
        result = serialize.dumps_value(value, path)
    except (CallableNotFound, UnpicklableError) as exc:
        # leek's own message says it all; the traceback would only show leek's insides.
        text = f"{_class_path(exc)}: {exc}"
        return _failed(task_id, pid, path, started, _class_path(exc), text)
    except Exception as exc:  # noqa: BLE001 - the task's own error is recorded, not raised
        text = traceback.format_exc()
        if task.attempts <= task.retries:
            return _retried(task, pid, started, _class_path(exc), text)
        return _failed(task_id, pid, path, started, _class_path(exc), text)
    Task.objects.succeed(task_id, pid, result)
    return Outcome(task_id, path, TaskStatus.SUCCESSFUL, time.monotonic() - started)


def _retried(task: Task, pid: int, started: float, class_path: str, text: str) -> Outcome:
    delay = task.retry_backoff * 2 ** (task.attempts - 1)
    Task.objects.retry(task.pk, pid, delay, class_path, text)
    note = f"{_last_line(text)}; retry {task.attempts} of {task.retries} in {delay:g} s"
    return Outcome(task.pk, task.callable_path, TaskStatus.READY, time.monotonic() - started, note)


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def _failed(
    task_id: int, pid: int, path: str, started: float, class_path: str, text: str
) -> Outcome:
    Task.objects.fail(task_id, pid, class_path, text)
    last_line = _last_line(text) or class_path
    return Outcome(task_id, path, TaskStatus.FAILED, time.monotonic() - started, last_line)
