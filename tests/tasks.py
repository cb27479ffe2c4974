"""Task fixtures for the tests, named after what they do."""

import os
import threading
import time

from leek import Leek

leek = Leek()


@leek.task
def add(a, b):
    return a + b


@leek.task
def return_pid():
    return os.getpid()


@leek.task
def raise_value_error(message="bad value"):
    raise ValueError(message)


@leek.task
def sleep_seconds(seconds):
    time.sleep(seconds)
    return seconds


@leek.task
def write_row(n):
    from tests.models import Row

    Row.objects.create(n=n, pid=os.getpid())
    return n


@leek.task
def record_span(n, seconds=0.05):
    """Write a row with start and end times, to see whether tasks overlap."""
    from tests.models import Row

    start = time.time()
    time.sleep(seconds)
    Row.objects.create(n=n, pid=os.getpid())
    return (start, time.time())


@leek.task
def return_unpicklable():
    return lambda: None


@leek.task
def crash_with_os_exit(code=3):
    os._exit(code)


@leek.task(pool="emails", priority=5)
def in_email_pool():
    return "emails"


@leek.task
def connection_identity():
    """Return this worker's pid and its database session (the backend pid on PostgreSQL)."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_backend_pid()")
            return os.getpid(), cursor.fetchone()[0]
        cursor.execute("SELECT 1")
    return os.getpid(), id(connection.connection)


@leek.task
def count_queries():
    """Run a query and return how many queries this connection has logged."""
    from django.db import connection

    from tests.models import Row

    Row.objects.count()
    return len(connection.queries)


_held = []


@leek.task
def allocate_mb(mb):
    """Allocate `mb` MB and keep it: the worker stays that big after the task."""
    _held.append(bytearray(mb * 2**20))
    return os.getpid()


@leek.task
def allocate_forever(step_mb=20):
    """Allocate step_mb more every 50 ms until something stops this process."""
    while True:
        _held.append(bytearray(step_mb * 2**20))
        time.sleep(0.05)


@leek.task
def sleep_with_child(seconds):
    """Start a child process that sleeps, then sleep; return the child's pid if it ends."""
    import subprocess
    import sys

    from tests.models import Row

    child = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
    Row.objects.create(n=child.pid, pid=os.getpid())
    time.sleep(seconds)
    return child.pid


@leek.task(timeout=1)
def sleep_past_own_timeout(seconds):
    time.sleep(seconds)


@leek.task(retries=3, retry_backoff=0.1)
def fail_until_third_call(n):
    """Raise on the first two calls with this n, succeed on the third."""
    from tests.models import Row

    Row.objects.create(n=n, pid=os.getpid())
    calls = Row.objects.filter(n=n).count()
    if calls < 3:
        raise RuntimeError(f"call {calls} fails")
    return calls


@leek.task(retries=1, retry_backoff=0.1)
def always_fail():
    raise RuntimeError("always")


@leek.task(lost_retries=1)
def crash_every_time():
    os._exit(7)


@leek.task
def crash_with_segfault():
    """Die of SIGSEGV, as a broken C extension would."""
    import ctypes

    ctypes.string_at(0)


@leek.task
def sleep_then_write_row(n, seconds=0.01):
    """Sleep, then write a row: a short task a killed worker can die in the middle of."""
    from tests.models import Row

    time.sleep(seconds)
    Row.objects.create(n=n, pid=os.getpid())
    return n


@leek.task
def echo_bytes(data):
    """Return the length of `data` (a large argument makes a large payload to load)."""
    return len(data)


@leek.task(serializer="json")
def json_describe(name, sizes, options=None):
    """Return what it was given, as JSON data: a task stored without a pickle."""
    return {"name": name, "total": sum(sizes), "options": options, "pid": os.getpid()}


@leek.task
def make_directory(path):
    """Make a directory: a task whose run is easy to see from outside."""
    os.mkdir(path)
    return path


@leek.task(retries=1, lost_retries=1, retry_backoff=0.1)
def raise_then_crash(marker):
    """Raise on the first call (a file `marker` says it happened), crash its worker after."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first call")
    os._exit(7)


@leek.task
def statement_timeout():
    """Return this worker's PostgreSQL statement_timeout ("0": none)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        return cursor.fetchone()[0]


@leek.task(retries=3, retry_backoff=0.2)
def write_row_or_retry(n, seconds=0.002):
    """Sleep, then write a row; a database error (a restart) runs it again."""
    from tests.models import Row

    time.sleep(seconds)
    Row.objects.create(n=n, pid=os.getpid())
    return n


@leek.task
def snooze_first_time(n, seconds):
    """Ask to run again in `seconds` the first time (it writes a row), then return when."""
    from leek import Snooze
    from tests.models import Row

    if not Row.objects.filter(n=n).exists():
        Row.objects.create(n=n, pid=os.getpid())
        raise Snooze(seconds)
    return time.time()


@leek.task
def leave_a_thread_behind(seconds, linger):
    """Run `seconds`, leaving a thread that sleeps `linger` s: the process cannot exit until."""
    threading.Thread(target=time.sleep, args=(linger,), name="lingering").start()
    time.sleep(seconds)
    return os.getpid()
