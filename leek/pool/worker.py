"""The worker process: django.setup(), then claim and run the tasks the supervisor sends.

Started by the supervisor with the spawn method, so each worker imports Django, the project
and the task code afresh and shares no connection or socket with anyone. It ignores SIGINT,
SIGHUP and SIGTERM (a Ctrl-C reaches the whole process group; shutdown is the supervisor's
call) and exits when told to retire or when its pipe to the supervisor closes.

At boot it imports every installed app's `tasks` module and the modules named in
LEEK["task_modules"], so that task code that does not import fails the boot (and a reload
with broken code keeps the old generation serving) instead of failing every task.

Only the standard library and leek.pool.watchdog are imported here: this module is loaded
before django.setup(); the loop itself is leek.pool.loop.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from datetime import datetime
from multiprocessing.connection import Connection

from leek.pool import watchdog

# Exit code of a worker that could not boot (django.setup() or an import failed).
WORKER_BOOT_ERROR = 3


def main(conn: Connection, max_memory: int = 0, generation_at: datetime | None = None) -> None:
    """Serve tasks over `conn` until retired; the entry point of a worker process.

    `max_memory` (MB, 0: none): past it, the worker claims no further task and waits to be
    retired. `generation_at`: when its generation started, which stamps the schedules it
    records (leek.schedule_records).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # A TERM to the whole group (systemd, docker, timeout) must not cut tasks short either:
    # the supervisor drains, and kills what outlives its grace period.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    watchdog.start()
    try:
        import django

        django.setup()
        from leek import discovery, schedule_records
        from leek.pool import loop, messages  # import errors are boot errors

        discovery.import_task_modules()
        # The server reads the periodic tasks from the table: it never imports task code.
        schedule_records.record_declared(generation_at)
    except Exception:  # noqa: BLE001 - process boundary: report and exit with a named code
        sys.stderr.write(f"leek worker {os.getpid()} cannot boot:\n{traceback.format_exc()}")
        sys.stderr.flush()
        os._exit(WORKER_BOOT_ERROR)
    conn.send((messages.Booted(os.getpid()),))
    loop.Worker(conn, max_memory).serve()
