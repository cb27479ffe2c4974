"""Run one claimed JSON row: a `@leek.task` function called with plain data.

Runs in a worker process (and in the web process in eager mode), called by
`leek.runner.execute` for rows whose encoding is JSON. Such a row names its task by path and
holds {"args": [...], "kwargs": {...}}: nothing in it is unpickled, and the path runs only if
it names a function declared with `@leek.task` (or a django.tasks `Task`, which the Django
Tasks backend's worker side runs), never an arbitrary callable. The return value is stored as
JSON too.
"""

from __future__ import annotations

from typing import Any

from django.utils.module_loading import import_string

from leek import runner, serialize
from leek.exceptions import CallableNotFound, NotATask, UnserializableError
from leek.hotpath import Claimed


def execute(task: Claimed, started: float) -> runner.Outcome:
    """Run a claimed JSON row; return its outcome, not yet recorded."""
    path = task.callable_path
    try:
        found = import_string(path)
    except ImportError as exc:
        error = CallableNotFound(
            f"Cannot import {path} for task {task.task_id}: {exc}. Was its module moved, "
            "renamed or deleted since the task was offloaded?"
        )
        return runner.refused(task, started, error)
    if not is_declared(found):
        try:
            from leek import backend_worker  # a django.tasks Task, or refused there
        except ImportError as exc:  # Django 5.2 without the django-tasks backport
            error = NotATask(f"task {task.task_id}: {path} is not a @leek.task ({exc})")
            return runner.refused(task, started, error)
        return backend_worker.execute(task, started)
    try:
        call = serialize.loads_json(task.payload)
        value = found(*call["args"], **call["kwargs"])
        serialize.check_json(value, f"the return value of {path}")
        result = serialize.dumps_json(value)
    except UnserializableError as exc:
        return runner.refused(task, started, exc)
    except Exception as exc:  # noqa: BLE001 - the task's own error is recorded, not raised
        return runner.raised(task, started, exc)
    return runner.succeeded(task, started, result)


def is_declared(found: Any) -> bool:
    """Tell whether `found` is a function declared with `@leek.task`."""
    from leek.api import ConfiguredTask

    return callable(found) and isinstance(getattr(found, "leek", None), ConfiguredTask)
