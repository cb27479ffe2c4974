"""Several servers on one database: a server that stops beating has its tasks settled.

Real `manage.py leek` servers on this run's database. The lease rule of leek.server.leases:
once a server's heartbeat is older than LEEK["server_lease"], another server settles the
tasks its workers left RUNNING, and names itself on each.
"""

import os
import signal
import socket
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.utils import timezone

from leek import control, dbclock
from leek.models import Server, Task, TaskStatus
from tests import tasks
from tests.conftest import holds_for, requires_server_db, wait_until
from tests.models import Row

LOST = "leek.exceptions.WorkerLost"
# Beat often and take a server for gone after 3 s: the test waits seconds, not minutes.
QUICK_LEASE = {"LEEK_TEST_HEARTBEAT_INTERVAL": "0.5", "LEEK_TEST_SERVER_LEASE": "3"}


# libfaketime (Debian's faketime package): runs a process with its clock set off.
FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def settled_by(server):
    return f"settled by server {socket.gethostname()}:{server.pid}"


def test_three_servers_one_killed_mid_run_every_task_ends_once(start_server):
    servers = [start_server(workers=1, env=QUICK_LEASE) for _ in range(3)]
    victim, survivors = servers[0], servers[1:]
    count = 2000
    handles = tasks.sleep_then_write_row.offload_many((i, 0.002) for i in range(count))
    ids = [h.id for h in handles]
    wait_until(lambda: Row.objects.count() >= 300, 120, "the run to be under way")
    victim.worker_pids()
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait_exit(30) == -signal.SIGKILL
    unfinished = Task.objects.filter(id__in=ids, status__in=("READY", "RUNNING"))
    wait_until(lambda: not unfinished.exists(), 300, "every task to end", 0.2)
    rows = Task.objects.filter(id__in=ids)
    failed = rows.filter(status=TaskStatus.FAILED)
    # Only what the killed server's worker was running is lost, settled by a survivor.
    assert failed.count() <= 1, list(failed.values_list("id", "traceback"))
    for traceback in failed.values_list("traceback", flat=True):
        assert traceback.startswith(LOST)
        assert any(settled_by(s) in traceback for s in survivors), traceback
    ns = list(Row.objects.values_list("n", flat=True))
    assert len(ns) == len(set(ns)), "a task ran twice"
    by_id = dict(zip(ids, range(count), strict=True))
    successful = {by_id[i] for i in rows.filter(status="SUCCESSFUL").values_list("id", flat=True)}
    assert len(successful) + failed.count() == count
    assert successful <= set(ns)
    # Each survivor ran some of them.
    ran_on = set(rows.values_list("worker_pid", flat=True))
    for server in survivors:
        assert ran_on & set(server.worker_pids()), f"server {server.pid} ran nothing"
    killed = Server.objects.get(pid=victim.pid, host=socket.gethostname())
    wait_until(lambda: Server.objects.get(pk=killed.pk).stopped_at, 30, "the row marked gone")


def silent_server(host, seconds_ago, **extra):
    now = timezone.now()
    return Server.objects.create(
        host=host,
        pid=4242,
        started_at=now - timedelta(hours=1),
        heartbeat_at=now - timedelta(seconds=seconds_ago),
        **extra,
    )


def running_on(host, pid=777):
    return Task.objects.create(
        callable_path="tests.tasks.add",
        payload=b"",
        status=TaskStatus.RUNNING,
        worker_host=host,
        worker_pid=pid,
        started_at=timezone.now() - timedelta(minutes=5),
        attempts=1,
    )


def test_a_silent_server_on_another_host_has_its_tasks_settled_after_the_lease(start_server):
    gone = silent_server("gone-host", seconds_ago=10)
    orphan = running_on("gone-host")
    # Another host with a live server as well as a silent one: its own server checks its
    # pids; nobody from elsewhere may settle its tasks.
    silent_server("busy-host", seconds_ago=10)
    silent_server("busy-host", seconds_ago=-3600)  # beats, as far as anyone can tell
    kept = running_on("busy-host")
    server = start_server(workers=1, env=QUICK_LEASE)
    wait_until(
        lambda: Task.objects.get(pk=orphan.pk).status == TaskStatus.FAILED, 30, "the settling"
    )
    row = Task.objects.get(pk=orphan.pk)
    assert row.exception_class_path == LOST
    assert "worker 777 on gone-host was lost with its server gone-host:4242" in row.traceback
    assert settled_by(server) in row.traceback
    assert Server.objects.get(pk=gone.pk).stopped_at is not None
    assert holds_for(lambda: Task.objects.get(pk=kept.pk).status == TaskStatus.RUNNING, 2.0)


def test_a_server_within_its_lease_keeps_its_tasks(start_server):
    beating = silent_server("slow-host", seconds_ago=1)  # late, but within 3 s
    mine = running_on("slow-host")
    start_server(workers=1, env={**QUICK_LEASE, "LEEK_TEST_SERVER_LEASE": "3600"})
    assert holds_for(lambda: Task.objects.get(pk=mine.pk).status == TaskStatus.RUNNING, 3.0)
    assert Server.objects.get(pk=beating.pk).stopped_at is None


@requires_server_db
def test_a_claim_skips_a_row_another_transaction_holds_instead_of_waiting(start_server):
    # A row locked by another transaction (another server's worker claiming it) is skipped
    # at once (FOR UPDATE SKIP LOCKED): the worker takes the next task, and the locked one
    # runs once the lock is gone.
    control.pause("default", "test")
    first, second = (h.id for h in tasks.add.offload_many([(1, 1), (2, 2)]))
    locked, release = threading.Event(), threading.Event()

    def hold_the_first_row():
        try:
            with transaction.atomic():
                list(Task.objects.select_for_update().filter(pk=first).values("id"))
                locked.set()
                release.wait(60)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_first_row)
    holder.start()
    try:
        assert locked.wait(30)
        start_server(workers=1)
        control.resume("default", "test")
        wait_until(
            lambda: Task.objects.get(pk=second).status == TaskStatus.SUCCESSFUL,
            30,
            "the second task to run while the first row is locked",
        )
        assert Task.objects.get(pk=first).status == TaskStatus.READY
    finally:
        release.set()
        holder.join(30)
    wait_until(
        lambda: Task.objects.get(pk=first).status == TaskStatus.SUCCESSFUL, 30, "the first task"
    )


@requires_server_db  # servers on one SQLite database share a host, and its clock
@pytest.mark.skipif(not FAKETIME.exists(), reason="needs libfaketime (apt install faketime)")
def test_a_server_whose_clock_runs_behind_still_beats_in_time(start_server):
    # Heartbeats and leases are in the database's time: a host clock two minutes slow does
    # not make its server look silent, and its row is not taken for gone by the others.
    slow = {"LD_PRELOAD": str(FAKETIME), "FAKETIME": "-120s", "DONT_FAKE_MONOTONIC": "1"}
    behind = start_server(workers=1, env={**QUICK_LEASE, **slow})
    start_server(workers=1, env=QUICK_LEASE)
    row = wait_until(lambda: Server.objects.filter(pid=behind.pid).first(), 30, "its row")
    assert abs(row.started_at - timezone.now()) > timedelta(seconds=100)  # the clock is off
    assert holds_for(lambda: Server.objects.get(pk=row.pk).stopped_at is None, 5.0)
    beat = Server.objects.get(pk=row.pk).heartbeat_at
    assert abs(beat - dbclock.now("default")) < timedelta(seconds=10)
