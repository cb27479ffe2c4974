"""A Django Tasks backend row read back as Django's `TaskResult`, with Django's meanings.

Runs in the web process (`get_result()`, `refresh()`) and in the worker that runs the task
(the `TaskResult` its signals and `TaskContext` carry). `started_at` is the first attempt's
start, `last_attempted_at` the latest's; `errors` holds one `TaskError` per failed attempt
and `worker_ids` one "host:pid" per attempt, both from `Task.attempt_list`.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from django.utils.module_loading import import_string

from leek import serialize
from leek.djtasks import Task, TaskError, TaskResult, TaskResultDoesNotExist, TaskResultStatus
from leek.models import Task as Row
from leek.models import TaskStatus
from leek.states import SNOOZED


def encode_call(args: list[Any], kwargs: dict[str, Any], run_after: datetime | None) -> bytes:
    """Return the JSON payload of a call (args and kwargs already JSON-normalized)."""
    call: dict[str, Any] = {"args": args, "kwargs": kwargs}
    if run_after is not None:
        # The task's own run_after: the row's changes when a retry waits.
        call["run_after"] = run_after.isoformat()
    return serialize.dumps_json(call)


def decode_call(payload: bytes | memoryview) -> tuple[list[Any], dict[str, Any], datetime | None]:
    """Return (args, kwargs, run_after) of a JSON payload."""
    call = serialize.loads_json(payload)
    run_after = call.get("run_after")
    return call["args"], call["kwargs"], run_after and datetime.fromisoformat(run_after)


def resolve(path: str) -> Task:
    """Return the `Task` that `path` names; raise `LookupError` if it names anything else.

    The safety rule of the stored path: a row names a Task, never an arbitrary callable.
    """
    try:
        found = import_string(path)
    except ImportError as exc:
        raise LookupError(f"{path} cannot be imported: {exc}") from exc
    if not isinstance(found, Task):
        raise LookupError(
            f"{path} is a {type(found).__module__}.{type(found).__qualname__}, not a "
            "django.tasks Task; a JSON row runs only functions declared with django.tasks' "
            "@task or with @leek.task."
        )
    return found


def to_result(row: Row, alias: str, task: Task | None = None) -> TaskResult:
    """Return the `TaskResult` of a JSON row; `task`: its Task if already resolved."""
    args, kwargs, run_after = decode_call(row.payload)
    if task is None:
        try:
            task = resolve(row.callable_path)
        except LookupError as exc:
            raise TaskResultDoesNotExist(f"task {row.pk}: {exc}") from exc
    task = dataclasses.replace(
        task, priority=row.priority, queue_name=row.pool, run_after=run_after, backend=alias
    )
    attempts = row.attempt_list
    finished = row.status in (TaskStatus.SUCCESSFUL, TaskStatus.FAILED)
    result = TaskResult(
        task=task,
        id=str(row.pk),
        status=TaskResultStatus(row.status),
        enqueued_at=row.enqueued_at,
        started_at=attempts[0].started_at if attempts else None,
        last_attempted_at=attempts[-1].started_at if attempts else None,
        finished_at=row.finished_at if finished else None,
        args=args,
        kwargs=kwargs,
        backend=alias,
        errors=[
            TaskError(exception_class_path=a.exception_class_path, traceback=a.traceback)
            for a in attempts
            if a.exception_class_path and a.exception_class_path != SNOOZED  # not a failure
        ],
        worker_ids=[a.worker for a in attempts],
    )
    if row.status == TaskStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", row.return_value)
    return result
