"""Django Tasks (`@task`) fixtures for the backend's tests, named after what they do."""

import asyncio
import os
import time

from leek.djtasks import TaskContext, signals, task


@task()
def add(a, b):
    return a + b


@task()
def noop(*args, **kwargs):
    return None


@task()
async def async_add(a, b):
    await asyncio.sleep(0.01)
    return a + b


@task()
def write_row(n):
    """Write a row saying which process ran the task."""
    from tests.models import Row

    Row.objects.create(n=n, pid=os.getpid())
    return n


@task()
def sleep_then_write_row(n, seconds):
    """Sleep, then write a row: a run that lasts."""
    from tests.models import Row

    time.sleep(seconds)
    Row.objects.create(n=n, pid=os.getpid())
    return n


@task()
def raise_value_error(message="bad value"):
    raise ValueError(message)


@task()
def exit_with_system_exit():
    raise SystemExit("leaving")


@task()
def return_a_set():
    """Return something JSON cannot hold."""
    return {1, 2}


@task(retries=2, retry_backoff=0.05)
def fail_until_third_call(n):
    """Raise on the first two calls with this n, succeed on the third."""
    from tests.models import Row

    Row.objects.create(n=n, pid=os.getpid())
    calls = Row.objects.filter(n=n).count()
    if calls < 3:
        raise RuntimeError(f"call {calls} fails")
    return calls


@task(retries=1, retry_backoff=0.05)
def always_fail():
    raise RuntimeError("always")


@task(retries=1, retry_backoff=600)
def fail_then_wait_long():
    """Fail, and wait ten minutes before the retry: a task seen between two attempts."""
    raise RuntimeError("first attempt")


@task()
def crash_with_os_exit(code=3):
    os._exit(code)


@task(lost_retries=1)
def crash_every_time():
    os._exit(7)


@task(timeout=1)
def sleep_past_own_timeout(seconds):
    time.sleep(seconds)


@task(takes_context=True)
def report_context(context, n):
    """Return what the context says: attempt, result id, worker ids, and the status."""
    assert isinstance(context, TaskContext)
    result = context.task_result
    return {
        "n": n,
        "attempt": context.attempt,
        "id": result.id,
        "worker_ids": result.worker_ids,
        "status": str(result.status),
        "pid": os.getpid(),
    }


@task(takes_context=True, retries=2, retry_backoff=0.05)
def fail_first_attempt_with_context(context):
    if context.attempt == 1:
        raise RuntimeError("first attempt fails")
    return context.attempt


@task(queue_name="emails", priority=10)
def in_email_queue():
    return "emails"


def not_a_task():
    """A plain function: a row naming it must never run it."""
    from tests.models import Row

    Row.objects.create(n=-1, pid=os.getpid())


@task(unique_key=lambda report_id, seconds: f"dt-report-{report_id}")
def build_report(report_id, seconds):
    """A unique task per report: write a row, after a while."""
    from tests.models import Row

    time.sleep(seconds)
    Row.objects.create(n=report_id, pid=os.getpid())
    return report_id


@task(max_concurrency=1)
def one_at_a_time(n, seconds):
    """Return when it started and ended, to see whether two of them overlapped."""
    start = time.time()
    time.sleep(seconds)
    return [start, time.time()]


@task()
def snooze_first_time(n, seconds):
    """Ask to run again in `seconds` the first time (it writes a row), then return n."""
    from leek import Snooze
    from tests.models import Row

    if not Row.objects.filter(n=n).exists():
        Row.objects.create(n=n, pid=os.getpid())
        raise Snooze(seconds)
    return n


@task()
def signalled(n):
    """A task whose signals the receivers below record."""
    return n


# Receivers, connected wherever this module is imported: in the test process and in each
# worker (which imports it to run a task). They act only for `signalled`, and write a row
# saying which signal reached which process: n = 1 enqueued, 2 started, 3 finished.
_SIGNAL_ROWS = {"task_enqueued": 1, "task_started": 2, "task_finished": 3}


def _record_signal(sender, task_result, signal, **kwargs):
    from leek.backend import LeekBackend
    from tests.models import Row

    if task_result.task.name != "signalled" or sender is not LeekBackend:
        return
    name = next(k for k in _SIGNAL_ROWS if getattr(signals, k) is signal)
    Row.objects.create(n=_SIGNAL_ROWS[name] * 1000 + task_result.args[0], pid=os.getpid())


def _raise_in_receiver(sender, task_result, **kwargs):
    if task_result.task.name == "signalled":
        raise RuntimeError("a receiver that raises")


for _signal in (signals.task_enqueued, signals.task_started, signals.task_finished):
    _signal.connect(_raise_in_receiver, dispatch_uid=f"raise-{id(_signal)}")
    _signal.connect(_record_signal, dispatch_uid=f"record-{id(_signal)}")
