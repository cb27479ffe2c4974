"""Tell whether a pid on this host is still the worker that claimed a task.

Used by the server process: the supervisor, for tasks left RUNNING by an earlier server on
this host (leek.pool.losses), and the heartbeat thread, for those of a server whose lease
ran out (leek.server.leases). Only psutil: no Django.
"""

from __future__ import annotations

from datetime import datetime

import psutil

# How much later than the task's start a process may seem to have begun and still be the
# worker that claimed it: psutil's create_time() is only as exact as the boot time and the
# clock ticks it is made of.
CREATED_AFTER_SLACK = 1.0


def may_hold(pid: int | None, started_at: datetime | None) -> bool:
    """Tell whether the live process `pid` could be the worker that started a task then.

    A pid the kernel gave to a newer process (a restarted container numbers its processes
    as it did before) is not that worker: it began after the task did.
    """
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        created = process.create_time()
    except psutil.AccessDenied:
        return True  # another user's process: maybe that user's server's worker
    except psutil.Error:
        return False
    return started_at is None or created <= started_at.timestamp() + CREATED_AFTER_SLACK
