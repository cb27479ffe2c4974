"""The subcommands of `manage.py leek`: status, purge, pause, resume, retry, cancel, terminate."""

import getpass
import io
import json
import os
import signal
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from leek import control, serialize
from leek.models import Server, Task, TaskStatus
from tests import tasks
from tests.conftest import KIND, ROOT, wait_until

SHORT_LEASE = {"LEEK_TEST_HEARTBEAT_INTERVAL": "0.5", "LEEK_TEST_SERVER_LEASE": "2"}


def leek(*args, env=None):
    """Run `manage.py leek ARGS` in a process of its own; return (exit code, stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "django", "leek", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


def leek_here(*args):
    """Call `manage.py leek ARGS` in this process; return (exit code, output)."""
    out = io.StringIO()
    try:
        call_command("leek", *args, stdout=out)
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


def row(status=TaskStatus.READY, **values):
    return Task(
        callable_path="tests.tasks.add",
        payload=serialize.dumps_call(tasks.add, (1, 2), {}),
        status=status,
        **values,
    )


def test_help_lists_the_subcommands():
    code, out, _ = leek("--help")
    assert code == 0
    for name in ("status", "purge", "pause", "resume", "retry", "cancel", "terminate"):
        assert name in out
    assert "--workers" in out  # the server's options stay where they were


def test_status_with_the_server_up_then_stopped(start_server):
    server = start_server(workers=2, env=SHORT_LEASE)

    def reported():
        row = Server.objects.filter(pid=server.pid).first()
        return row and len(row.workers) == 2 and all(w["rss_mb"] > 0 for w in row.workers)

    # Idle workers' memory is read too.
    wait_until(reported, 30, "the server's row with its workers' memory")
    code, out, err = leek("status", env=SHORT_LEASE)
    assert code == 0, err
    assert f"127.0.0.1:{server.port}" in out
    assert "live" in out
    assert out.count("  worker ") == 2
    code, out, _ = leek("status", "--json", env=SHORT_LEASE)
    assert code == 0
    found = json.loads(out)
    assert found["ok"] is True
    [listed] = found["servers"]
    assert listed["pid"] == server.pid
    assert listed["live"] is True
    assert len(listed["workers"]) == 2
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    code, out, err = leek("status", env=SHORT_LEASE)
    assert code == 1
    assert "stopped" in out
    assert "no live leek server: the last one stopped" in err
    assert len(err.strip().splitlines()) == 1


def test_status_sees_a_killed_server_go_stale(start_server):
    server = start_server(env=SHORT_LEASE)
    wait_until(lambda: Server.objects.filter(pid=server.pid).exists(), 30, "the server's row")
    assert leek("status", env=SHORT_LEASE)[0] == 0
    server.worker_pids()
    server.signal(signal.SIGKILL)
    server.wait_exit()

    def fails():
        code, out, err = leek("status", env=SHORT_LEASE)
        return code == 1 and (out, err)

    out, err = wait_until(fails, 30, "status to fail", interval=0.5)
    assert "STALE" in out
    assert "no live leek server: the last heartbeat was" in err
    assert Server.objects.get(pid=server.pid).stopped_at is None


def test_status_max_age_fails_on_an_old_backlog(start_server):
    # A server of another pool: the default pool's tasks wait.
    start_server("--pool", "emails")
    old = timezone.now() - timedelta(minutes=10)
    Task.objects.bulk_create([row(run_after=old, enqueued_at=old), row()])
    assert leek("status")[0] == 0
    assert leek("status", "--max-age", "3600")[0] == 0
    code, out, err = leek("status", "--max-age", "60")
    assert code == 2
    assert "pool default: 2 READY, oldest 10 min" in out
    assert "pool default: a READY task has waited" in err
    assert "more than --max-age 60 s" in err
    # A paused pool's backlog is meant to wait.
    control.pause("default", "ops")
    assert leek("status", "--max-age", "60")[0] == 0


# 100,000 rows; on PostgreSQL and MariaDB a fifth of that: there Django's bulk_create takes
# about 30 s for 100,000 rows, and the purge's batches are the same whatever the engine.
SUCCESSFUL_ROWS, FAILED_ROWS = (90_000, 10_000) if KIND == "sqlite" else (18_000, 2_000)


def test_purge_deletes_old_finished_rows_in_batches():
    now = timezone.now()
    old = now - timedelta(days=8)
    rows = [row(TaskStatus.SUCCESSFUL, finished_at=old) for _ in range(SUCCESSFUL_ROWS)]
    rows += [row(TaskStatus.FAILED, finished_at=old) for _ in range(FAILED_ROWS)]
    rows += [row(TaskStatus.SUCCESSFUL, finished_at=now), row(TaskStatus.READY)]
    rows += [row(TaskStatus.RUNNING, started_at=old, worker_pid=1, worker_host="h")]
    Task.objects.bulk_create(rows, batch_size=5000)
    Server.objects.create(host="gone", pid=1, heartbeat_at=old, stopped_at=old)
    Server.objects.create(host="here", pid=2)
    code, out = leek_here("purge", "--older-than", "7d", "--dry-run")
    assert code == 0
    total = SUCCESSFUL_ROWS + FAILED_ROWS
    assert out.startswith(f"would delete {total} SUCCESSFUL and FAILED tasks finished before")
    assert Task.objects.count() == total + 3
    code, out = leek_here("purge", "--older-than", "7d", "--status", "FAILED")
    assert out.startswith(f"deleted {FAILED_ROWS} FAILED tasks")
    assert "deleted the rows of 1 servers" in out
    assert list(Server.objects.values_list("host", flat=True)) == ["here"]
    code, out = leek_here("purge", "--older-than", "7d")
    assert code == 0
    assert out.startswith(f"deleted {SUCCESSFUL_ROWS} SUCCESSFUL and FAILED tasks")
    left = sorted(Task.objects.values_list("status", flat=True))
    assert left == ["READY", "RUNNING", "SUCCESSFUL"]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("--older-than", "7 days"), "not a duration"),
        (("--older-than", "7d", "--status", "READY"), "only finished tasks"),
    ],
)
def test_purge_refuses_bad_input_and_deletes_nothing(args, error):
    Task.objects.bulk_create([row(TaskStatus.SUCCESSFUL, finished_at=timezone.now())])
    code, out = leek_here("purge", *args)
    assert code == 1
    assert error in out
    assert Task.objects.count() == 1


def test_pause_and_resume_from_the_shell():
    assert leek_here("pause", "emails") == (
        0,
        "paused pool emails: its READY tasks wait, running ones finish\n",
    )
    assert control.paused_pools() == {"emails"}
    assert "was paused already" in leek_here("pause", "emails")[1]
    assert leek_here("resume", "emails") == (0, "resumed pool emails\n")
    assert "was not paused" in leek_here("resume", "emails")[1]
    assert control.paused_pools() == set()


def test_retry_and_cancel_from_the_shell_say_what_they_did():
    failed, ready = Task.objects.bulk_create(
        [row(TaskStatus.FAILED, finished_at=timezone.now()), row()]
    )
    code, out = leek_here("cancel", str(ready.pk), str(failed.pk), "999999")
    assert code == 1
    assert f"cancelled: task {ready.pk}" in out
    assert f"task {failed.pk} is FAILED" in out
    assert "no task 999999" in out
    assert Task.objects.get(pk=ready.pk).control_by == getpass.getuser()
    code, out = leek_here("retry", str(failed.pk), str(ready.pk))
    assert code == 0
    assert f"retried (READY again): task {failed.pk}, {ready.pk}" in out
    assert Task.objects.get(pk=failed.pk).status == TaskStatus.READY


def test_terminate_from_the_shell(start_server):
    start_server()
    handle = tasks.sleep_seconds.offload(120)
    wait_until(lambda: handle.refresh().status == TaskStatus.RUNNING, 30, "the task to start")
    code, out, err = leek("terminate", str(handle.id))
    assert code == 0, err
    assert f"asked to terminate: task {handle.id}" in out
    task = handle.wait(30).task
    assert task.status == TaskStatus.FAILED
    assert f"terminated by {getpass.getuser()}" in task.traceback
    code, out, err = leek("terminate", str(handle.id))
    assert code == 1
    assert f"task {handle.id} is FAILED" in err
