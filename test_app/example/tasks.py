"""The example's tasks: one that succeeds, one that fails, one that takes its time, and one
that runs every minute by itself (the admin's Schedules list shows it).

And one written against Django's Tasks framework (`@task`, `.enqueue()`), which settings.TASKS
sends to leek: on Django 6 from `django.tasks`, on 5.2 from the django-tasks backport
(`pip install 'leek[tasks]'`). Without either, the page has no button for it.
"""

import time
from datetime import timedelta

from leek import Leek

try:
    from django.tasks import task
except ImportError:
    try:
        from django_tasks import task
    except ImportError:
        task = None

leek = Leek()


@leek.task
def add(a, b):
    """Return the sum of `a` and `b`."""
    return a + b


@leek.task
def fail(message="boom"):
    """Raise a RuntimeError, to show a FAILED task."""
    raise RuntimeError(message)


@leek.task(every=timedelta(minutes=1))
def tally():
    """Count the tasks by status: a periodic task, run by the server once a minute."""
    from django.db.models import Count

    from leek.models import Task

    return dict(Task.objects.values_list("status").annotate(n=Count("id")).order_by())


@leek.task
def slow(seconds=5):
    """Sleep for `seconds`, to show a RUNNING task."""
    time.sleep(seconds)
    return f"slept {seconds} s"


if task is not None:

    @task(priority=10)
    def greet(name):
        """Return a greeting: a django.tasks task, run by leek's pool like the others."""
        return f"hello, {name}"

else:
    greet = None
