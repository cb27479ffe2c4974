"""The public API: `Leek`, `@leek.task`, `.offload()`, its handle, and the old spellings.

Runs in the web process. `.offload()` pickles the call, saves a READY row, and tells the
server once the surrounding transaction commits. It goes through `push_task_to_queue`, looked
up at call time, so `@patch("leek.api.push_task_to_queue", ...)` makes offloaded work run
however a test likes. `.offload_many()` saves many calls with one INSERT per few hundred rows
and tells the server once.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, overload

from django.db import DatabaseError, router, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from leek import client, conf, hotpath, jsoncall, keys, runner, schedules, serialize, unique
from leek.exceptions import Snooze as Snooze  # leek.Snooze, for the tasks
from leek.exceptions import TaskFailed, TaskNotFinished, TaskTimeout
from leek.models import Encoding, Task, TaskStatus, UniqueUntil


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """How a task is offloaded and run: pool, priority, earliest start, limits, retries."""

    pool: str = conf.DEFAULT_POOL
    priority: int = 0
    run_after: datetime | timedelta | None = None
    # Seconds it may run (None: the server's --task-timeout).
    timeout: float | None = None
    # Runs again after raising, this many times, waiting retry_backoff s, then twice that...
    retries: int = 0
    retry_backoff: float = 1.0
    # Runs again after its worker died, this many times (a task that kills its worker
    # every time must not loop for ever).
    lost_retries: int = 0
    # "pickle" or "json" (plain data only); "": LEEK["serializer"].
    serializer: str = ""
    # Saves nothing new while a task with the same key is READY (unique_until="end": or
    # RUNNING); a str, or a function of the call's arguments that returns one (leek.unique).
    unique_key: str | Callable[..., str] | None = None
    unique_until: str = UniqueUntil.START
    # At most max_concurrency at once and `rate` starts ("10/m") of the tasks with the same
    # concurrency_key (a str or a function, as unique_key; default: the callable's path),
    # across every server (leek.throttle).
    concurrency_key: str | Callable[..., str] | None = None
    max_concurrency: int | None = None
    rate: str | None = None

    def __post_init__(self) -> None:
        if self.serializer not in ("", *conf.SERIALIZERS):
            raise ValueError(f"serializer={self.serializer!r}: give 'pickle' or 'json'.")
        if not isinstance(self.pool, str) or not self.pool or any(c.isspace() for c in self.pool):
            raise ValueError(
                f"pool={self.pool!r}: a pool name is a non-empty word without spaces."
            )
        if not isinstance(self.priority, int) or isinstance(self.priority, bool):
            raise TypeError(f"priority={self.priority!r}: the priority must be an int.")
        if self.run_after is not None and not isinstance(self.run_after, datetime | timedelta):
            raise TypeError(
                f"run_after={self.run_after!r}: give a datetime or a timedelta from now."
            )
        for name in ("retries", "lost_retries"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name}={value!r}: give a whole number, 0 or more.")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout={self.timeout!r}: give a number of seconds above 0.")
        if not self.retry_backoff >= 0:
            raise ValueError(f"retry_backoff={self.retry_backoff!r}: give seconds, 0 or more.")
        if isinstance(self.run_after, datetime) and timezone.is_naive(self.run_after):
            raise ValueError(
                f"run_after={self.run_after!r} is naive; give an aware datetime "
                "(django.utils.timezone.now() + timedelta(...))."
            )
        keys.check_options(self)

    @property
    def plain(self) -> bool:
        """Tell whether no unique key nor limit applies (the fast path)."""
        return self.unique_key is None and self.max_concurrency is None and self.rate is None

    def due_at(self, now: datetime) -> datetime:
        """Return when a task offloaded at `now` may start."""
        if self.run_after is None:
            return now
        if isinstance(self.run_after, timedelta):
            return now + self.run_after
        return self.run_after


class TaskHandle:
    """A task that was offloaded: read its status, wait for it, get what it returned.

    A new handle knows its task is READY; it reads the row when asked for more.
    """

    def __init__(self, task_id: int, callable_path: str, using: str) -> None:
        self._id = task_id
        self._callable_path = callable_path
        self._using = using
        self._task: Task | None = None

    def __repr__(self) -> str:
        return f"<TaskHandle {self.id} {self._callable_path} {self.status}>"

    @property
    def id(self) -> int:
        """Return the task's id, the primary key of its row."""
        return self._id

    @property
    def task(self) -> Task:
        """Return the task's row as last read (read now if it never was)."""
        if self._task is None:
            self.refresh()
        return self._task

    @property
    def status(self) -> TaskStatus:
        """Return the status as last read (call `refresh()` to read it again)."""
        if self._task is None:
            return TaskStatus.READY
        return TaskStatus(self._task.status)

    @property
    def is_finished(self) -> bool:
        """Tell whether the task had ended when last read."""
        return self._task is not None and self._task.is_finished

    def refresh(self) -> TaskHandle:
        """Read the row again."""
        self._task = Task.objects.using(self._using).get(pk=self._id)
        return self

    def wait(self, timeout: float | None = None) -> TaskHandle:
        """Return once the task has ended; raise `TaskTimeout` after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        # Short tasks end in a few milliseconds: look often at first, then less and less.
        pause = 0.0005
        while not self.refresh().is_finished:
            if deadline is not None and time.monotonic() >= deadline:
                raise TaskTimeout(f"task {self.id} is still {self.status} after {timeout} s")
            time.sleep(pause)
            pause = min(pause * 1.5, 0.1)
        return self

    @property
    def return_value(self) -> Any:
        """Return what the task returned; raise if it failed or has not ended."""
        if self.status == TaskStatus.SUCCESSFUL:
            return self.task.return_value
        if self.status == TaskStatus.FAILED:
            raise TaskFailed(self.task, f"task {self.id} failed:\n{self.task.traceback}")
        raise TaskNotFinished(f"task {self.id} is {self.status}; it has no return value yet")

    @property
    def error(self) -> str:
        """Return the error's class path and message when the task FAILED, else ''."""
        if self.status != TaskStatus.FAILED:
            return ""
        return self.task.exception_message

    @property
    def traceback(self) -> str:
        """Return the full traceback text when the task FAILED, else ''."""
        return self.task.traceback if self.status == TaskStatus.FAILED else ""


class ConfiguredTask:
    """A task function with the options it is offloaded with."""

    def __init__(self, func: Callable[..., Any], options: TaskOptions) -> None:
        self.func = func
        self.options = options

    def __repr__(self) -> str:
        return f"<ConfiguredTask {serialize.callable_path(self.func)} {self.options}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function here and now, as if it were not a task."""
        return self.func(*args, **kwargs)

    def using(self, **changes: Any) -> ConfiguredTask:
        """Return the same task with other options (those of `TaskOptions`)."""
        return ConfiguredTask(self.func, dataclasses.replace(self.options, **changes))

    def offload(self, *args: Any, **kwargs: Any) -> TaskHandle:
        """Queue up the call to run in a worker; return its handle."""
        # Looked up at call time: tests patch leek.api.push_task_to_queue.
        return push_task_to_queue(self, *args, **kwargs)

    def offload_many(self, calls: Iterable[Mapping[str, Any] | tuple]) -> list[TaskHandle]:
        """Queue up many calls at once; return their handles, in order.

        Each call is a dict of keyword arguments or a tuple of positional ones:
        `send_mail.offload_many({"to": a} for a in addresses)`. The rows are saved in one
        transaction, a few hundred per INSERT, and the server is told once it commits.
        """
        split = [split_call(i, call) for i, call in enumerate(calls)]
        if push_task_to_queue is not _push_task_to_queue:  # patched: each call goes through it
            return [push_task_to_queue(self, *args, **kwargs) for args, kwargs in split]
        return _offload(self, split)


# The options of @leek.task that make it a periodic task.
SCHEDULE_OPTIONS = ("cron", "every", "catch_up", "overlap")


class Leek:
    """Declares tasks: `leek = Leek()`, then `@leek.task` or `@leek.task(pool=..., ...)`."""

    def __init__(self, pool: str = conf.DEFAULT_POOL) -> None:
        self.defaults = TaskOptions(pool=pool)

    @overload
    def task(self, func: Callable[..., Any], /, **options: Any) -> Callable[..., Any]: ...

    @overload
    def task(self, func: None = None, /, **options: Any) -> Callable[..., Any]: ...

    def task(self, func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Give a function `.offload()`, `.using()`; calling it still runs it in place.

        `cron="*/5 * * * *"` or `every=timedelta(minutes=5)` (with `catch_up=`, `overlap=`)
        also makes it a periodic task, called with no arguments (leek.schedules).
        """
        when = {k: options.pop(k) for k in SCHEDULE_OPTIONS if k in options}
        task_options = dataclasses.replace(self.defaults, **options)
        if when and "cron" not in when and "every" not in when:
            raise TypeError(f"{', '.join(when)} apply to a periodic task: add cron= or every=.")

        def declare(fn: Callable[..., Any]) -> Callable[..., Any]:
            if when:
                schedules.declare(serialize.callable_path(fn), when)
            # The function itself is returned (not a wrapper) so that it pickles by reference.
            configured = ConfiguredTask(fn, task_options)
            fn.leek = configured  # type: ignore[attr-defined]
            fn.offload = configured.offload  # type: ignore[attr-defined]
            fn.offload_many = configured.offload_many  # type: ignore[attr-defined]
            fn.using = configured.using  # type: ignore[attr-defined]
            return fn

        return declare if func is None else declare(func)


def _configured(a_callable: Callable[..., Any]) -> ConfiguredTask:
    if isinstance(a_callable, ConfiguredTask):
        return a_callable
    declared = getattr(a_callable, "leek", None)
    if isinstance(declared, ConfiguredTask):
        return declared
    return ConfiguredTask(a_callable, TaskOptions())


def split_call(index: int, call: Mapping[str, Any] | tuple) -> tuple[tuple, dict[str, Any]]:
    """Return (args, kwargs) of call number `index` of an `offload_many()`."""
    if isinstance(call, Mapping):
        return (), dict(call)
    if isinstance(call, tuple):
        return call, {}
    raise TypeError(
        f"call {index} is a {type(call).__name__}; give a dict of keyword arguments or a "
        "tuple of positional ones."
    )


def push_task_to_queue(a_callable: Callable[..., Any], *args: Any, **kwargs: Any) -> TaskHandle:
    """Offload `a_callable(*args, **kwargs)`: save a READY row, notify the server on commit."""
    return _offload(_configured(a_callable), [(args, kwargs)])[0]


# The original, to tell whether a test patched it.
_push_task_to_queue = push_task_to_queue


def _offload(configured: ConfiguredTask, calls: list[tuple[tuple, dict]]) -> list[TaskHandle]:
    fn, options = configured.func, configured.options
    path = serialize.callable_path(fn)
    if getattr(fn, "__module__", None) == "__main__":
        raise serialize.UnpicklableError(
            f"{path} is defined in __main__, which a worker cannot import; "
            "move it into a module of your project."
        )
    encoding = _encoding(options, path)
    if encoding == Encoding.JSON:
        _check_json_task(fn, path)
        payloads = [serialize.dumps_json_call(path, args, kwargs) for args, kwargs in calls]
    else:
        payloads = [serialize.dumps_call(fn, args, kwargs) for args, kwargs in calls]
    extras = None if options.plain else [keys.columns(options, path, a, k) for a, k in calls]
    saved = save(options, path, payloads, encoding, extras)
    handles = [TaskHandle(task_id, path, saved.using) for task_id in saved.ids]
    if conf.get().eager:  # they ran already
        for handle in handles:
            handle.refresh()
    return handles


def _encoding(options: TaskOptions, path: str) -> Encoding:
    """Return how the calls of a task are stored: its own choice, else the site's."""
    site = conf.get().serializer
    chosen = options.serializer or site
    if chosen == "pickle" and site == "json":
        raise serialize.UnpicklableError(
            f"{path} asks for serializer='pickle', but LEEK['serializer'] is 'json': this "
            "site stores no pickles. Pass plain data and drop serializer='pickle'."
        )
    return Encoding.JSON if chosen == "json" else Encoding.PICKLE


def _check_json_task(fn: Callable[..., Any], path: str) -> None:
    """Raise unless a worker can find `fn` by its path alone, as a JSON row names it."""
    try:
        found = import_string(path)
    except ImportError:
        found = None
    if found is not fn or not jsoncall.is_declared(fn):
        raise serialize.UnserializableError(
            f"{path} cannot be stored as JSON: a JSON row names its task by path, so the task "
            "must be a function declared with @leek.task at the top level of a module."
        )


@dataclass(frozen=True, slots=True)
class Saved:
    """Rows `save()` saved: their ids in order, the enqueue time, the database alias.

    `new`: the ids inserted; the others are those of the tasks holding the calls' unique keys.
    """

    ids: list[int]
    enqueued_at: datetime
    using: str
    new: list[int]


def row(
    options: TaskOptions,
    path: str,
    payload: bytes,
    encoding: str,
    now: datetime,
    run_after: datetime | None = None,
) -> tuple:
    """Return the values of a READY row, in the order of hotpath.OFFLOAD_COLUMNS."""
    fields = (options.timeout, options.retries, options.retry_backoff, options.lost_retries)
    due = now if run_after is None else run_after
    return (options.pool, path, payload, options.priority, due, now, *fields, encoding)


def save(
    options: TaskOptions,
    path: str,
    payloads: list[bytes],
    encoding: str,
    extras: list[tuple] | None = None,
) -> Saved:
    """Insert one READY row per encoded call and tell the server once the caller commits.

    The one path of every task: `.offload()` and the Django Tasks backend both end here.
    In eager mode the tasks run here and now instead. `extras`: each call's columns of
    uniqueness and limits (leek.keys.columns), None for a plain task. A call whose unique
    key a task holds saves nothing: its id is the holder's, and it is not announced.
    """
    now = timezone.now()
    using = router.db_for_write(Task)
    if not payloads:
        return Saved([], now, using, [])
    eager = conf.get().eager
    # Eager mode runs at once, whatever run_after says, as Celery's eager mode does.
    run_after = now if eager else options.due_at(now)
    rows = [row(options, path, p, encoding, now, run_after) for p in payloads]
    limited = extras is not None
    if limited:
        rows = [values + extra for values, extra in zip(rows, extras, strict=True)]
    if options.unique_key is not None:
        ids, new = unique.insert(using, rows)
    else:
        ids = new = _insert(using, path, rows, limited)
    if eager:
        for task_id in new:
            runner.run(task_id, os.getpid(), socket.gethostname())
    elif run_after <= now and new:
        # A delayed task is not announced: the server's sweep wakes up when it is due.
        transaction.on_commit(
            lambda: client.notify(options.pool, options.priority, new), using=using
        )
    return Saved(ids, now, using, new)


def _insert(using: str, path: str, rows: list[tuple], limited: bool = False) -> list[int]:
    """Insert the rows; a database error says which task it failed to save, and where."""
    try:
        if len(rows) == 1:
            return hotpath.insert(using, rows, limited)
        with transaction.atomic(using=using):
            return hotpath.insert(using, rows, limited)
    except DatabaseError as exc:
        # The same error (callers catch OperationalError, read its args and its cause), with
        # what the driver's text omits.
        what = f"the task {path}" if len(rows) == 1 else f"{len(rows)} tasks {path}"
        said = f"cannot save {what} in database {using!r}, nothing was queued"
        if exc.args and isinstance(exc.args[0], str):
            exc.args = (f"{said}: {exc.args[0]}", *exc.args[1:])
        else:  # MySQL's (code, text): the code stays first, for whoever reads it
            exc.add_note(said)
        raise


def query_task(task_id: int) -> Task:
    """Return the row of a task by its id (raises `Task.DoesNotExist`)."""
    return Task.objects.get(pk=task_id)


def list_tasks(finished: bool | None = None) -> Iterator[Task]:
    """Iterate over the task rows, oldest first: all, only finished, or only unfinished."""
    rows = Task.objects.order_by("id")
    done = (TaskStatus.SUCCESSFUL, TaskStatus.FAILED)
    if finished is True:
        rows = rows.filter(status__in=done)
    elif finished is False:
        rows = rows.exclude(status__in=done)
    return rows.iterator()
