"""A worker's watch on its server: when the server process dies, the worker dies too.

Runs in each worker process, in a thread of its own started before django.setup(). A server
killed with SIGKILL cannot drain its workers, and a worker left behind would run its task
unsupervised (no time or memory limit), hold its database connection, and be invisible to
the next server (issue 13). The thread waits on the parent's sentinel, which multiprocessing
gives every spawned child: a pipe whose other end only the server holds, so it reads EOF the
moment the server is gone, however it died. Then the worker kills its own children (the
task's processes) and exits; the next server, or another one, settles its task as lost.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
from multiprocessing.connection import wait

import psutil

# Exit code of a worker that outlived its server.
WORKER_ORPHANED = 4


def start() -> None:
    """Watch the server process from a daemon thread; no-op outside a spawned worker."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return
    threading.Thread(
        target=_watch, args=(parent.sentinel, parent.pid), name="leek-watchdog", daemon=True
    ).start()


def _watch(sentinel: int, server_pid: int | None) -> None:
    wait([sentinel])
    children = _kill_children()
    sys.stderr.write(
        f"leek worker {os.getpid()}: server {server_pid} is gone; killed {children} child "
        "process(es) and exiting\n"
    )
    sys.stderr.flush()
    os._exit(WORKER_ORPHANED)


def _kill_children() -> int:
    """SIGKILL every process below this one; return how many there were."""
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()
    return len(children)
