"""The SQLite database's disk fills up under a real server, then has room again.

The database lives on a small tmpfs this test mounts (root only; skipped elsewhere), with a
server of its own; a filler file takes the last of the space.
"""

import contextlib
import errno
import os
import subprocess
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import OperationalError
from django.utils import timezone

from leek import hotpath
from leek.models import Task, TaskStatus
from tests import tasks
from tests.conftest import KIND, this_process_on, wait_until

pytestmark = pytest.mark.skipif(KIND != "sqlite", reason="the SQLite database's own disk")

FULL = "database or disk is full"


@contextlib.contextmanager
def small_filesystem(size):
    """Mount a tmpfs of `size` on a new directory; unmount and remove it at the end."""
    where = Path(tempfile.mkdtemp(prefix="leek-full-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if mounted.returncode:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True, timeout=30).returncode:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)
        with contextlib.suppress(OSError):  # busy a moment after a lazy unmount
            where.rmdir()


def fill(path):
    """Write to `path` until the filesystem has no room left."""
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as filler:
        while True:
            try:
                filler.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return


def test_a_full_disk_fails_offload_clearly_loses_nothing_and_serves_again(start_server):
    with small_filesystem("4m") as where:
        db = str(where / "db.sqlite3")
        try:
            with this_process_on(NAME=db):
                env = {"LEEK_TEST_DB_NAME": db, "LEEK_TEST_HEARTBEAT_INTERVAL": "0.5"}
                server = start_server(workers=1, env=env)
                try:
                    fill_run_and_free(server, where / "filler")
                finally:
                    server.stop()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(hotpath.turn_lock_path(db))


def fill_run_and_free(server, filler):
    done = [h.id for h in tasks.add.offload_many((i, i) for i in range(20))]
    ended = Task.objects.filter(id__in=done, status=TaskStatus.SUCCESSFUL)
    wait_until(lambda: ended.count() == len(done), 60, "the first tasks")
    # Committed now, due once the disk is full: the worker's claims meet it.
    due_at = timezone.now() + timedelta(seconds=2)
    delayed = tasks.add.using(run_after=due_at).offload_many((i, 1) for i in range(20))
    fill(filler)
    # Offloads go on while the database still has room of its own (free pages, the WAL):
    # each that returned is committed, and must run.
    committed = [h.id for h in delayed]
    for _ in range(500):
        try:
            committed.append(tasks.echo_bytes.offload(b"x" * 20000).id)
        except OperationalError as exc:
            refused = str(exc)
            break
    else:
        pytest.fail("the database took 500 more tasks on a full disk")
    assert FULL in refused
    assert "cannot save the task tests.tasks.echo_bytes in database 'default'" in refused
    wait_until(lambda: FULL in server.log(), 30, "the server to log the full disk")
    wait_until(lambda: timezone.now() > due_at + timedelta(seconds=1), 10, "the delayed tasks")
    os.unlink(filler)
    wait_until(
        lambda: (
            Task.objects.filter(id__in=committed, status=TaskStatus.SUCCESSFUL).count()
            == len(committed)
        ),
        60,
        "the tasks committed before the disk filled",
    )
    assert ended.count() == len(done)
    assert tasks.add.offload(2, 3).wait(60).return_value == 5
    assert server.proc.poll() is None
