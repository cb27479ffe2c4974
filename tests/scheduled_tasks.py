"""Periodic tasks declared in code; a test's server loads them through LEEK["task_modules"].

Not a `tasks` module, so that no other test's server runs them.
"""

import os
from datetime import timedelta

from leek import Leek

leek = Leek()


@leek.task(every=timedelta(seconds=1))
def every_second():
    from tests.models import Row

    Row.objects.create(n=1, pid=os.getpid())
    return "tick"


@leek.task(cron="0 3 * * *", priority=3, retries=2)
def nightly():
    return "report"
