"""leek as a Django Tasks backend: `TASKS = {"default": {"BACKEND": "leek.backend.LeekBackend"}}`.

Runs in the web process. It validates a `@task` call, maps it to leek's task options
(`queue_name` is the pool, `priority` and `run_after` as they are, leek's own options from
the task or from `OPTIONS`), encodes the arguments as JSON and saves the row through the one
path of `.offload()` (`leek.api.save`): the row is inserted in the caller's transaction and
the server is told when it commits. Workers run these rows in `leek.backend_worker`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import router

from leek import api, checks, conf, keys, results
from leek.djtasks import (
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    normalize_json,
    signals,
)
from leek.models import Encoding
from leek.models import Task as Row

# leek's own task options, in OPTIONS (every task of the backend) and on @task (one task).
OPTION_NAMES = (
    "timeout",
    "retries",
    "retry_backoff",
    "lost_retries",
    "unique_key",
    "unique_until",
    "concurrency_key",
    "max_concurrency",
    "rate",
)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LeekTask(Task):
    """A Django Task with leek's options; None takes the backend's OPTIONS value.

    `@task(retries=3, retry_backoff=2, timeout=60, lost_retries=1)` where Django's `task()`
    hands unknown keywords to the backend's `task_class` (Django 6.1, django-tasks 0.12).
    The uniqueness and limit options are those of `@leek.task` (leek.keys); a key function
    is given the call's arguments as JSON gives them back (lists, not tuples).
    """

    # Seconds it may run (None: OPTIONS, else the server's --task-timeout).
    timeout: float | None = None
    # Runs again after raising, this many times, waiting retry_backoff s, then twice that...
    retries: int | None = None
    retry_backoff: float | None = None
    # Runs again after its worker died, this many times.
    lost_retries: int | None = None
    # An enqueue whose key a task holds saves nothing and returns that task's result.
    unique_key: str | Callable[..., str] | None = None
    unique_until: str | None = None
    # At most max_concurrency at once, and `rate` starts, of the tasks with the same key.
    concurrency_key: str | Callable[..., str] | None = None
    max_concurrency: int | None = None
    rate: str | None = None


class LeekBackend(BaseTaskBackend):
    """Runs `@task` functions in the worker pool of `manage.py leek`."""

    task_class = LeekTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        unknown = sorted(set(self.options) - set(OPTION_NAMES))
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS'] holds {unknown[0]!r}, which is not a leek "
                f"option; the options are: {', '.join(OPTION_NAMES)}."
            )
        try:
            self.defaults = api.TaskOptions(**self.options)
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS']: {exc}") from exc
        # Options of each task validated so far (a Task is a frozen value), for the tasks
        # without a run_after: those come and go, and would grow this without end.
        self._validated: dict[Task, api.TaskOptions] = {}

    def validate_task(self, task: Task) -> None:
        """Apply Django's rules, then check leek's options of the task."""
        super().validate_task(task)
        self._options(task, validate=False)

    def _options(self, task: Task, validate: bool = True) -> api.TaskOptions:
        """Return the leek options of `task` (checked by Django's rules first if `validate`)."""
        with contextlib.suppress(TypeError):
            found = self._validated.get(task)
            if found is not None:
                return found
        if validate:
            super().validate_task(task)
        changes = {n: getattr(task, n) for n in OPTION_NAMES if getattr(task, n, None) is not None}
        try:
            options = dataclasses.replace(
                self.defaults,
                pool=task.queue_name,
                priority=task.priority,
                run_after=task.run_after,
                **changes,
            )
        except (TypeError, ValueError) as exc:
            raise InvalidTask(f"{task.module_path}: {exc}") from exc
        if task.run_after is None:
            with contextlib.suppress(TypeError):  # a key that is an unhashable callable
                self._validated[task] = options
        return options

    def enqueue(self, task: Task, args: Iterable[Any], kwargs: Mapping[str, Any]) -> TaskResult:
        """Queue up the Task to be executed."""
        return self._enqueue(task, [(args, kwargs)])[0]

    def enqueue_many(
        self, task: Task, calls: Iterable[Mapping[str, Any] | tuple]
    ) -> list[TaskResult]:
        """Queue up many calls of one Task at once; return their results, in order.

        Each call is a dict of keyword arguments or a tuple of positional ones, as in
        `.offload_many()`: one INSERT per 500 rows and one notification on commit.
        """
        return self._enqueue(task, [api.split_call(i, call) for i, call in enumerate(calls)])

    def _enqueue(self, task: Task, calls: list[tuple[Any, Any]]) -> list[TaskResult]:
        options = self._options(task)
        path = task.module_path
        # Django's JSON rule, with Django's error (TypeError "Unsupported type ...").
        normalized = [(normalize_json(args), normalize_json(kwargs)) for args, kwargs in calls]
        payloads = [results.encode_call(a, k, task.run_after) for a, k in normalized]
        extras = None if options.plain else [keys.columns(options, path, *c) for c in normalized]
        saved = api.save(options, path, payloads, Encoding.JSON, extras)
        eager = conf.get().eager  # they ran already
        fresh = set(saved.new)  # each once: a later call of the batch with its key is held
        found = []
        enqueued = []
        for task_id, (args, kwargs) in zip(saved.ids, normalized, strict=True):
            first = task_id in fresh
            fresh.discard(task_id)
            if eager or not first:  # ran, or the holder of its unique key
                result = self._holder(task, task_id, saved.using)
            else:
                result = TaskResult(
                    task=task,
                    id=str(task_id),
                    status=TaskResultStatus.READY,
                    enqueued_at=saved.enqueued_at,
                    started_at=None,
                    last_attempted_at=None,
                    finished_at=None,
                    args=args,
                    kwargs=kwargs,
                    backend=self.alias,
                    errors=[],
                    worker_ids=[],
                )
            found.append(result)
            if first:
                enqueued.append(result)
        for result in enqueued:
            signals.task_enqueued.send_robust(type(self), task_result=result)
        return found

    def _holder(self, task: Task, task_id: int, using: str) -> TaskResult:
        """Return the result of task `task_id`, read where it was saved (maybe uncommitted).

        The task an enqueue ran at once (eager mode), or the one holding its unique key,
        which may be an `.offload()` of another callable with the same key.
        """
        row = Row.objects.using(using).get(pk=task_id)
        if row.encoding != Encoding.JSON:
            raise InvalidTask(
                f"{task.module_path}: its unique key is held by task {task_id}, an "
                f".offload() of {row.callable_path}, which is not a Django Tasks task; "
                "nothing was enqueued. Give the two tasks keys of their own."
            )
        return results.to_result(row, self.alias)

    def get_result(self, result_id: str) -> TaskResult:
        """Read a task's row as a TaskResult; raise TaskResultDoesNotExist if there is none."""
        text = str(result_id)
        row = None
        if text.isascii() and text.isdecimal() and len(text) < 20:
            rows = Row.objects.using(router.db_for_read(Row))
            row = rows.filter(pk=int(text), encoding=Encoding.JSON).first()
        if row is None:
            raise TaskResultDoesNotExist(f"There is no Django Tasks result with id {text!r}.")
        return results.to_result(row, self.alias)

    def check(self, **kwargs: Any) -> list[Any]:
        """Check that leek is installed and that a server runs each queue."""
        return checks.check_backend(self.alias, self.queues)
