"""Task fixtures for the tests, named after what they do."""

import os
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
