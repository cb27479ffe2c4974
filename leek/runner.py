"""Run one task: claim its row, load the call, run it, record the outcome.

Runs in a worker process, and in the web process itself in eager mode. Whatever the task
does, the row ends SUCCESSFUL or FAILED with the reason (or READY for a retry); only the
death of the process can leave it RUNNING, which is the supervisor's business. A worker
records one task's outcome and claims its next in one transaction, so `execute()` writes
nothing and `record()` writes without committing on its own.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import dataclass

from django.db import router
from django.utils import timezone

from leek import conf, hotpath, serialize
from leek.exceptions import (
    BadSignature,
    CallableNotFound,
    PickleRefused,
    Snooze,
    UnpicklableError,
)
from leek.hotpath import Claimed, Writer
from leek.models import Encoding, Task, TaskStatus
from leek.states import SNOOZED, Claim

# The length of Task.exception_class_path.
CLASS_PATH_MAX = 255
REFUSED = "leek.exceptions.OutcomeRefused"

# A task that fails is logged here at ERROR with its exception, so that error trackers
# hooked to `logging` (Sentry's SDK is) receive it with its traceback.
logger = logging.getLogger("leek.task")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended, and what `record()` writes on the row."""

    task_id: int
    callable_path: str
    status: TaskStatus
    duration: float
    # The encoded return value (SUCCESSFUL).
    result: bytes = b""
    # The error's class path and traceback (FAILED, or READY for a retry).
    class_path: str = ""
    text: str = ""
    # Seconds before the retry (READY).
    delay: float = 0.0
    # One line for the log: the error, and for a retry which one it is.
    error: str = ""
    # Which attempt ran: the fencing token of its claim (leek.states.Claim).
    attempt: int = 0
    # READY because the task raised Snooze: its attempt is given back.
    snoozed: bool = False


def database() -> str:
    """Return the alias of the database that holds the task table."""
    return router.db_for_write(Task)


def class_path(exc: BaseException) -> str:
    """Return the dotted path of the class of `exc`."""
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def execute(task: Claimed) -> Outcome:
    """Load and run a claimed task; return its outcome, not yet recorded."""
    started = time.monotonic()
    if task.encoding == Encoding.JSON:
        from leek import jsoncall

        return jsoncall.execute(task, started)
    path = task.callable_path
    if conf.get().serializer == "json":
        error = PickleRefused(
            f"task {task.task_id} {path} is stored as a pickle, and LEEK['serializer'] is "
            "'json': this site runs no pickles. It was not unpickled."
        )
        return refused(task, started, error)
    try:
        fn, args, kwargs = serialize.loads_call(task.payload, path)
        value = fn(*args, **kwargs)
        result = serialize.dumps_value(value, path)
    except (BadSignature, CallableNotFound, UnpicklableError) as exc:
        return refused(task, started, exc)
    except Exception as exc:  # noqa: BLE001 - the task's own error is recorded, not raised
        return raised(task, started, exc)
    return succeeded(task, started, result)


def succeeded(task: Claimed, started: float, result: bytes) -> Outcome:
    """Return the outcome of a task that returned, its value encoded as `result`."""
    return Outcome(
        task.task_id,
        task.callable_path,
        TaskStatus.SUCCESSFUL,
        time.monotonic() - started,
        result=result,
        attempt=task.attempts,
    )


def refused(task: Claimed, started: float, exc: Exception) -> Outcome:
    """Return the FAILED outcome of a task leek could not load or store (`exc` is leek's).

    leek's own message says it all; the traceback would only show leek's insides.
    """
    return failed(task, started, class_path(exc), f"{class_path(exc)}: {exc}", exc)


def raised(task: Claimed, started: float, exc: BaseException) -> Outcome:
    """Return the outcome of a task that raised `exc`: a retry while it has some, else FAILED.

    Called in the `except` block, whose traceback it records. A task that raised Snooze
    is READY again after the seconds it asked for, its attempt not spent.
    """
    if isinstance(exc, Snooze):
        return Outcome(
            task.task_id,
            task.callable_path,
            TaskStatus.READY,
            time.monotonic() - started,
            class_path=SNOOZED,
            text=f"{SNOOZED}: {exc}",
            delay=exc.seconds,
            error=str(exc),
            attempt=task.attempts,
            snoozed=True,
        )
    text = storable(traceback.format_exc())
    if task.attempts <= task.retries:
        delay = task.retry_backoff * 2 ** (task.attempts - 1)
        note = f"{_last_line(text)}; retry {task.attempts} of {task.retries} in {delay:g} s"
        return Outcome(
            task.task_id,
            task.callable_path,
            TaskStatus.READY,
            time.monotonic() - started,
            class_path=class_path(exc)[:CLASS_PATH_MAX],
            text=text,
            delay=delay,
            error=note,
            attempt=task.attempts,
        )
    return failed(task, started, class_path(exc), text, exc)


def storable(text: str) -> str:
    """Return `text` as every database stores it: no NUL, no lone surrogate."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def unrecordable(outcome: Outcome, exc: Exception) -> Outcome:
    """Return a FAILED outcome saying why the database refused `outcome`."""
    error_path = REFUSED
    text = storable(
        f"{error_path}: the database refused to record the outcome of task "
        f"{outcome.task_id} {outcome.callable_path} ({outcome.status}): "
        f"{type(exc).__name__}: {exc}"
    )
    return Outcome(
        outcome.task_id,
        outcome.callable_path,
        TaskStatus.FAILED,
        outcome.duration,
        class_path=error_path,
        text=text,
        error=_last_line(text),
        attempt=outcome.attempt,
    )


def _log_failure(task: Claimed, error: str, exc: BaseException | None) -> None:
    logger.error(
        "task %s %s failed on worker %s (attempt %s): %s",
        task.task_id,
        task.callable_path,
        os.getpid(),
        task.attempts,
        error,
        exc_info=exc,
    )


def failed(
    task: Claimed, started: float, error_path: str, text: str, exc: BaseException | None = None
) -> Outcome:
    """Return the outcome of a task that FAILED with the error `error_path`, `text`.

    It is logged at ERROR, with `exc` (the exception, when there is one) as exc_info.
    """
    error_path, text = error_path[:CLASS_PATH_MAX], storable(text)
    _log_failure(task, _last_line(text) or error_path, exc)
    return Outcome(
        task.task_id,
        task.callable_path,
        TaskStatus.FAILED,
        time.monotonic() - started,
        class_path=error_path,
        text=text,
        error=_last_line(text) or error_path,
        attempt=task.attempts,
    )


def record(writer: Writer, outcome: Outcome, pid: int, host: str) -> bool:
    """Write the outcome of a task the worker `pid` on `host` ran; False if the row moved on.

    The row must still be RUNNING under the same claim: that worker, that attempt.
    """
    claim = Claim(pid, host, outcome.attempt)
    if outcome.status == TaskStatus.SUCCESSFUL:
        return writer.succeed(outcome.task_id, claim, outcome.result)
    rows = Task.objects.using(writer.alias)
    if outcome.snoozed:
        return rows.snooze(outcome.task_id, claim, outcome.delay, outcome.text)
    if outcome.status == TaskStatus.READY:
        return rows.retry(outcome.task_id, claim, outcome.delay, outcome.class_path, outcome.text)
    return rows.fail(outcome.task_id, claim, outcome.class_path, outcome.text)


def recorded_before(alias: str, outcome: Outcome, pid: int, host: str) -> bool:
    """Tell whether the row already holds `outcome`, which worker `pid` on `host` recorded.

    Asked when the write is tried again after the database failed the last try: that
    COMMIT may have landed, its answer lost. Then the row moved on because of this very
    outcome, which is not one to call discarded.
    """
    found = (
        Task.objects.using(alias)
        .filter(pk=outcome.task_id)
        .values_list("status", "worker_pid", "worker_host", "attempts", "history")
        .first()
    )
    if found is None:
        return False
    status, worker_pid, worker_host, attempts, history = found
    if outcome.status != TaskStatus.READY:
        return (status, worker_pid, worker_host, attempts) == (
            outcome.status, pid, host, outcome.attempt
        )  # fmt: skip
    # Back to READY: the attempt that ended is the last of the history.
    last = history[-1] if history else {}
    return (
        status == TaskStatus.READY
        and last.get("worker") == f"{host}:{pid}"
        and last.get("exception_class_path") == outcome.class_path
        and attempts == outcome.attempt - outcome.snoozed
    )


def run(task_id: int, pid: int, host: str) -> Outcome | None:
    """Claim, run and record one task here and now (eager mode); None if it was not there.

    Limits (max_concurrency, rate) do not hold here, as run_after does not: eager mode
    runs each task as it is offloaded.
    """
    alias = database()
    with hotpath.transaction(alias) as writer:
        task = writer.claim_limited(task_id, pid, host, timezone.now())
    if task is None:
        return None
    outcome = execute(task)
    with hotpath.transaction(alias) as writer:
        record(writer, outcome, pid, host)
    return outcome
