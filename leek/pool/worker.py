"""The worker process: django.setup(), then claim and run the tasks the supervisor sends.

Started by the supervisor with the spawn method, so each worker imports Django, the project
and the task code afresh and shares no connection or socket with anyone. It ignores SIGINT,
SIGHUP and SIGTERM (a Ctrl-C reaches the whole process group; shutdown is the supervisor's
call) and exits when told to retire or when its pipe to the supervisor closes.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import traceback
from multiprocessing.connection import Connection

# Exit code of a worker that could not boot (django.setup() or an import failed).
WORKER_BOOT_ERROR = 3

logger = logging.getLogger("leek.worker")


def main(conn: Connection) -> None:
    """Serve tasks over `conn` until retired; the entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # A TERM to the whole group (systemd, docker, timeout) must not cut tasks short either:
    # the supervisor drains, and kills what outlives its grace period.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        import django

        django.setup()
        from leek import runner  # noqa: F401 - import errors are boot errors
    except Exception:  # noqa: BLE001 - process boundary: report and exit with a named code
        sys.stderr.write(f"leek worker {os.getpid()} cannot boot:\n{traceback.format_exc()}")
        sys.stderr.flush()
        os._exit(WORKER_BOOT_ERROR)
    from leek.pool import messages

    conn.send(messages.Booted(os.getpid()))
    host = socket.gethostname()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the supervisor is gone
        if isinstance(message, messages.Retire):
            return
        conn.send(run_one(conn, message.task_id, host))


def run_one(conn: Connection, task_id: int, host: str) -> object:
    """Run one task the way Django serves a request: fresh connections, no query log."""
    from django.db import DatabaseError, close_old_connections, reset_queries

    from leek import runner
    from leek.pool import messages

    pid = os.getpid()
    reset_queries()
    close_old_connections()
    try:
        outcome = runner.run(
            task_id,
            pid,
            host,
            on_start=lambda path, timeout: conn.send(messages.Started(task_id, path, timeout)),
        )
    except DatabaseError as exc:
        logger.exception("worker %s: database error on task %s", pid, task_id)
        return messages.Skipped(task_id, error=f"{type(exc).__name__}: {exc}")
    finally:
        close_old_connections()
    if outcome.status is None:
        return messages.Skipped(task_id)
    return messages.Finished(
        task_id, outcome.callable_path, outcome.status, outcome.duration, outcome.error
    )
