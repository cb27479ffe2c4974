"""The supervisor against real signals: workers killed from outside, reloads, shutdowns.

Every test runs a real `manage.py leek` server (tests.conftest.start_server) and sends real
signals to real pids: the server's, or a worker's found in `stats`. Nothing here kills a
process this test did not start.
"""

import contextlib
import importlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from leek.models import Task, TaskStatus
from tests import tasks
from tests.conftest import (
    DB_NAME,
    KIND,
    ROOT,
    holds_for,
    requires_postgres,
    requires_server_db,
    wait_until,
)
from tests.forwarder import Forwarder
from tests.models import Row

LOST = "leek.exceptions.WorkerLost"
BOOTED = ("idle", "busy")


def finished(handle, timeout=60):
    return handle.wait(timeout)


def booted(server):
    return [w for w in server.stats()["workers"] if w["state"] in BOOTED]


def alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill(server, pid, signum=signal.SIGKILL):
    """Send a signal to a worker of `server` (which is then sure to be stopped at teardown)."""
    server.known_pids.add(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def wait_dead(pid, timeout=30):
    wait_until(lambda: not alive(pid), timeout, f"process {pid} to die")


def running_worker(server, handle, timeout=60):
    """Wait until the task runs and the supervisor knows it; return its worker in stats."""

    def found():
        if handle.refresh().status != TaskStatus.RUNNING:
            return None
        for worker in server.stats()["workers"]:
            if worker["task"] == handle.id and worker["callable"]:
                return worker
        return None

    worker = wait_until(found, timeout, f"task {handle.id} to run")
    server.known_pids.add(worker["pid"])
    return worker


def wait_generation(server, generation, count, timeout=60):
    """Wait until the pool is `count` booted workers, all of `generation`."""

    def settled():
        workers = server.stats()["workers"]
        return (
            len(workers) == count
            and all(w["generation"] == generation and w["state"] in BOOTED for w in workers)
            and workers
        )

    workers = wait_until(settled, timeout, f"{count} workers of generation {generation}")
    server.worker_pids()
    return workers


def unfinished():
    return Task.objects.filter(status__in=(TaskStatus.READY, TaskStatus.RUNNING))


# -- workers killed from outside ------------------------------------------------------------


def test_kill_9_of_a_busy_worker_fails_its_task_and_a_replacement_serves(start_server):
    server = start_server(workers=1)
    handle = tasks.sleep_seconds.offload(30)
    worker = running_worker(server, handle)
    pid = worker["pid"]
    assert handle.task.worker_pid == pid
    kill(server, pid)
    finished(handle, 30)
    assert handle.status == TaskStatus.FAILED
    assert handle.task.exception_class_path == LOST
    for words in (f"worker {pid}", "SIGKILL", "not by leek", f"task {handle.id}"):
        assert words in handle.error, handle.error
    assert handle.task.traceback.startswith(LOST)
    after = finished(tasks.return_pid.offload())
    assert after.status == TaskStatus.SUCCESSFUL
    assert after.return_value != pid
    assert after.return_value in server.worker_pids()
    stats = server.stats()
    assert stats["counts"]["lost"] == 1
    assert stats["restarts"]["crash"] == 1


def test_a_segfault_fails_the_task_naming_sigsegv(start_server):
    start_server(workers=1)
    handle = finished(tasks.crash_with_segfault.offload())
    assert handle.status == TaskStatus.FAILED
    assert handle.task.exception_class_path == LOST
    pid = handle.task.worker_pid
    assert f"worker {pid} was killed by SIGSEGV" in handle.error, handle.error
    assert "not by leek" in handle.error
    after = finished(tasks.return_pid.offload())
    assert after.status == TaskStatus.SUCCESSFUL
    assert after.return_value != pid


def test_idle_workers_killed_again_and_again_are_replaced(start_server):
    server = start_server(workers=3)
    killed = set()
    for _ in range(3):
        idle = [w["pid"] for w in booted(server) if w["state"] == "idle"]
        assert len(idle) == 3
        for pid in idle:
            kill(server, pid)
        killed.update(idle)

        def replaced(killed=killed):
            up = booted(server)
            return len(up) == 3 and not {w["pid"] for w in up} & killed

        wait_until(replaced, 60, "three replacement workers")
    assert server.stats()["restarts"]["crash"] == 9
    with transaction.atomic():
        handles = [tasks.write_row.offload(i) for i in range(20)]
    for handle in handles:
        assert finished(handle).status == TaskStatus.SUCCESSFUL
        assert handle.task.worker_pid not in killed
    assert sorted(Row.objects.values_list("n", flat=True)) == list(range(20))


def test_killing_one_idle_worker_does_not_wedge_the_others(start_server):
    # DESIGN, known hazards: a worker killed idle while blocked on a shared queue's read lock
    # wedged every other worker. The survivors must keep taking tasks at once.
    server = start_server(workers=3)
    pids = [w["pid"] for w in booted(server)]
    victim, survivors = pids[0], set(pids[1:])
    kill(server, victim)
    wait_dead(victim)
    with transaction.atomic():
        handles = [tasks.record_span.offload(i, 0.2) for i in range(5)]
    ran_on = {finished(h).task.worker_pid for h in handles}
    assert all(h.status == TaskStatus.SUCCESSFUL for h in handles)
    assert victim not in ran_on
    assert ran_on & survivors, f"no task ran on a surviving worker: {ran_on} vs {survivors}"


def test_chaos_of_kill_9s_loses_only_running_tasks_and_runs_nothing_twice(start_server):
    server = start_server(workers=2)
    rng = random.Random(20240917)
    count = 300
    with transaction.atomic():
        handles = [
            tasks.sleep_then_write_row.offload(i, rng.uniform(0.01, 0.05)) for i in range(count)
        ]
    ids = [h.id for h in handles]
    killed = []
    # Four seconds of kills, and at least five: on a loaded machine replacements boot slowly.
    stop_at, give_up = time.monotonic() + 4.0, time.monotonic() + 120.0
    while (time.monotonic() < stop_at or len(killed) < 5) and time.monotonic() < give_up:
        # Booted workers only: killing workers while they boot is the crash-loop path.
        up = booted(server)
        if up:
            victim = rng.choice(up)["pid"]
            kill(server, victim)
            killed.append(victim)
        time.sleep(0.3)
    # Then the hazard: workers killed while idle.
    wait_until(lambda: booted(server), 60, "a booted worker after the chaos")
    for worker in booted(server):
        if worker["state"] == "idle":
            kill(server, worker["pid"])
            killed.append(worker["pid"])
    assert len(killed) >= 5, killed

    try:
        wait_until(lambda: not unfinished().filter(id__in=ids).exists(), 180, "every task", 0.2)
    except pytest.fail.Exception:
        stuck = list(unfinished().values_list("id", "status", "worker_pid", "attempts")[:20])
        pytest.fail(f"unfinished {stuck}; killed {killed}; {server.stats()}\n{server.log()}")
    by_id = dict(zip(ids, range(count), strict=True))
    rows = Task.objects.filter(id__in=ids)
    failed = rows.filter(status=TaskStatus.FAILED)
    assert not failed.exclude(exception_class_path=LOST).exists(), list(
        failed.values_list("id", "exception_class_path", "traceback")
    )
    assert set(failed.values_list("worker_pid", flat=True)) <= set(killed)
    assert rows.filter(status=TaskStatus.SUCCESSFUL).count() + failed.count() == count
    # Nothing ran twice: one row at most per n, exactly one for each success, none for a
    # task that never ran.
    ns = list(Row.objects.values_list("n", flat=True))
    assert len(ns) == len(set(ns)), sorted(n for n in ns if ns.count(n) > 1)
    successful = {
        by_id[i] for i in rows.filter(status=TaskStatus.SUCCESSFUL).values_list("id", flat=True)
    }
    assert successful <= set(ns)
    lost = {by_id[i] for i in failed.values_list("id", flat=True)}
    assert set(ns) <= successful | lost
    assert server.request(b"ping\n") == b"pong\n"
    after = finished(tasks.add.offload(2, 2))
    assert after.return_value == 4
    log = server.log()
    assert "database is locked" not in log


def sent_ahead_behind_a_long_task(server, count):
    """Offload `count` tasks behind a 60 s one; wait until its worker holds some of them.

    Short tasks first make the supervisor send ids ahead. Return the worker (as in stats),
    the long task and the others.
    """

    # As many short tasks as it takes (on a loaded machine, more than a few). The row ends
    # before the supervisor has read the worker's Finished: look a moment later, twice.
    def warmed():
        finished(tasks.add.offload(1, 2))
        return holds_for(lambda: server.stats()["prefetch"] >= 2, 0.3)

    wait_until(warmed, 120, "the supervisor to send ids ahead of short tasks")
    blocker = tasks.sleep_seconds.offload(60)
    worker = running_worker(server, blocker)
    followers = [tasks.return_pid.offload() for _ in range(count)]
    ids = {f.id for f in followers}

    def sent_ahead():
        found = next(w for w in server.stats()["workers"] if w["pid"] == worker["pid"])
        return ids & set(found["queued"])

    wait_until(sent_ahead, 30, "ids to be sent ahead to the busy worker")
    return worker, blocker, followers


def assert_ran_once_elsewhere(follower, pid):
    row = finished(follower).task
    assert row.status == TaskStatus.SUCCESSFUL, row.traceback
    assert row.attempts == 1
    assert follower.return_value != pid


def test_ids_sent_ahead_to_a_killed_worker_run_untouched_on_its_replacement(start_server):
    # DESIGN: "Whatever a worker has prefetched or claimed but not yet started when it dies
    # goes back to READY untouched". The worker is killed while a long task holds it.
    server = start_server(workers=1)
    worker, blocker, followers = sent_ahead_behind_a_long_task(server, 5)
    kill(server, worker["pid"])
    assert finished(blocker).task.exception_class_path == LOST
    for follower in followers:
        assert_ran_once_elsewhere(follower, worker["pid"])


def test_an_id_a_retiring_worker_claimed_just_before_it_died_goes_back_to_ready(start_server):
    # A retiring worker's ids sent ahead go to the others, but it may have claimed one in the
    # moment it was told to retire. Killed before it said Started, that claim is undone.
    server = start_server(workers=1)
    worker, blocker, (follower,) = sent_ahead_behind_a_long_task(server, 1)
    # As the worker's claim would leave the row (hotpath's claim statement).
    Task.objects.filter(pk=follower.id).update(
        status=TaskStatus.RUNNING,
        worker_pid=worker["pid"],
        worker_host=socket.gethostname(),
        started_at=timezone.now(),
        attempts=1,
    )
    server.signal(signal.SIGHUP)

    def retiring():
        states = {w["pid"]: w["state"] for w in server.stats()["workers"]}
        return states.get(worker["pid"]) == "retiring"

    wait_until(retiring, 60, "the old worker to retire")
    kill(server, worker["pid"])
    assert finished(blocker).task.exception_class_path == LOST
    assert_ran_once_elsewhere(follower, worker["pid"])


def test_an_id_a_worker_started_is_not_one_to_undo_at_its_exit():
    from leek.pool.handles import WorkerHandle

    # Given back at its retirement, then claimed and started before it read Retire: if it
    # dies now, the task is lost (the worker-lost rule), not put back READY untouched.
    handle = WorkerHandle(process=None, conn=None, generation=1, handed_on=[5, 6])
    handle.started(5, "tests.tasks.add", None)
    assert handle.handed_on == [6]
    assert handle.task_id == 5


def test_a_retiring_worker_that_may_have_claimed_an_id_it_handed_on_holds_the_pool():
    from multiprocessing import Pipe

    from leek.pool.dispatch import Dispatcher
    from leek.pool.handles import WorkerHandle, WorkerState
    from leek.server.backlog import Backlog

    # One worker: the old one retired while an id sent to it was in its pipe. It may claim
    # that id before it reads Retire, so the new worker takes nothing until the old one
    # says what it did: else two tasks would overlap on a pool of one.
    backlog = Backlog()
    backlog.add([(1, 0), (2, 0)])
    dispatcher = Dispatcher(backlog)
    old_end, old_worker_end = Pipe()
    new_end, new_worker_end = Pipe()
    old = WorkerHandle(process=None, conn=old_end, generation=1, state=WorkerState.IDLE)
    new = WorkerHandle(process=None, conn=new_end, generation=2, state=WorkerState.IDLE)
    dispatcher.dispatch([old, new], 1, 1)
    assert old.queued == [1]
    old.state = WorkerState.RETIRING
    dispatcher.give_back(old)
    dispatcher.dispatch([old, new], 1, 2)
    assert new.queued == []
    old.skipped((1,))  # it read Retire first and ran nothing
    dispatcher.dispatch([old, new], 1, 2)
    assert new.queued == [1]
    assert new_worker_end.recv().task_ids == (1,)
    for end in (old_end, old_worker_end, new_end, new_worker_end):
        end.close()


@requires_postgres
def test_a_loss_the_database_refused_is_written_once_it_answers(start_server):
    # The server's database sessions are cut just before its worker dies, so the first try
    # to record the loss fails. No sweep reconnects meanwhile (one an hour).
    server = start_server(workers=1, env={"LEEK_TEST_SWEEP_INTERVAL": "3600"})
    blocker = tasks.sleep_seconds.offload(60)
    worker = running_worker(server, blocker)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        cut = [pid for pid, done in cursor.fetchall() if done]

        def gone():
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [cut])
            return cursor.fetchone()[0] == 0

        assert cut
        wait_until(gone, 30, "the cut sessions to end")
    kill(server, worker["pid"])
    assert finished(blocker).task.exception_class_path == LOST
    assert f"cannot write the loss of task {blocker.id}" in server.log()
    took = "the database took the writes it had refused"
    wait_until(lambda: took in server.log(), 30, "the server to log the write")
    assert finished(tasks.add.offload(1, 1)).return_value == 2


def test_unclaim_puts_back_only_what_that_worker_claimed():
    from leek import hotpath
    from leek.runner import database

    mine, other, elsewhere, untouched = (tasks.add.offload(i, i).id for i in range(4))
    with hotpath.transaction(database()) as writer:
        assert writer.claim(mine, 4242, "host")
        assert writer.claim(other, 4343, "host")
        # The same pid on another host: a container of the same image.
        assert writer.claim(elsewhere, 4242, "other-host")
    ids = [mine, other, elsewhere, untouched]
    assert Task.objects.unclaim(ids, 4242, "host") == [mine]
    rows = {t.pk: t for t in Task.objects.filter(pk__in=ids)}
    assert (rows[mine].status, rows[mine].attempts, rows[mine].worker_pid) == ("READY", 0, None)
    assert rows[mine].started_at is None
    assert (rows[other].status, rows[other].worker_pid) == ("RUNNING", 4343)
    assert (rows[elsewhere].status, rows[elsewhere].worker_host) == ("RUNNING", "other-host")
    assert rows[untouched].status == "READY"


@requires_postgres
def test_unclaim_waits_for_a_claim_whose_commit_is_in_flight():
    # A worker killed just after it sent COMMIT: PostgreSQL may make the claim visible only
    # after the supervisor looked. Unclaimed too early, the row would stay RUNNING for good.
    from leek import hotpath
    from leek.runner import database

    task_id = tasks.add.offload(1, 1).id
    found = []

    def unclaim():
        try:
            found.append(Task.objects.unclaim([task_id], 4242, "host"))
        finally:
            connections.close_all()

    supervisor = threading.Thread(target=unclaim)
    with hotpath.transaction(database(), raw=True) as writer:
        assert writer.claim(task_id, 4242, "host")
        supervisor.start()

        def waiting_for_the_lock():
            # A session of its own: this one is in the claim's transaction, whose view of
            # pg_stat_activity would not change.
            import psycopg

            settings = connection.settings_dict
            with psycopg.connect(
                host=settings["HOST"],
                port=settings["PORT"],
                user=settings["USER"],
                dbname=settings["NAME"],
                autocommit=True,
            ) as other:
                sql = (
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                return other.execute(sql).fetchone()[0] > 0

        wait_until(waiting_for_the_lock, 30, "unclaim to wait for the row lock")
        assert supervisor.is_alive()
    supervisor.join(30)
    assert found == [[task_id]]
    row = Task.objects.get(pk=task_id)
    assert (row.status, row.attempts, row.worker_pid) == ("READY", 0, None)


# -- SIGHUP: reload -------------------------------------------------------------------------


def write_module(directory, name, version):
    path = directory / f"{name}.py"
    path.write_text(
        "from leek import Leek\n\nleek = Leek()\n\n\n"
        f"@leek.task\ndef version():\n    return {version}\n"
    )
    shutil.rmtree(directory / "__pycache__", ignore_errors=True)
    return path


@pytest.fixture
def reload_module(tmp_path, monkeypatch):
    """A task module on disk, on this process's path and (through env) the server's."""
    name = f"sup_reload_{uuid.uuid4().hex[:8]}"
    write_module(tmp_path, name, 1)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    module.env = {"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    module.rewrite = lambda version: write_module(tmp_path, name, version)
    return module


def test_sighup_loads_new_code_in_new_workers_and_lets_running_tasks_finish(
    start_server, reload_module
):
    server = start_server(workers=2, env=reload_module.env)
    assert finished(reload_module.version.offload()).return_value == 1
    old_pids = {w["pid"] for w in booted(server)}
    running = tasks.sleep_seconds.offload(2)
    running_worker(server, running)
    reload_module.rewrite(2)
    server.signal(signal.SIGHUP)
    new = wait_generation(server, 2, 2)
    assert not {w["pid"] for w in new} & old_pids
    assert finished(running).status == TaskStatus.SUCCESSFUL
    assert running.task.worker_pid in old_pids
    after = finished(reload_module.version.offload())
    assert after.return_value == 2
    assert after.task.worker_pid not in old_pids
    assert not Task.objects.filter(status=TaskStatus.FAILED).exists()
    stats = server.stats()
    assert stats["restarts"]["reload"] == 1
    assert (stats["counts"]["lost"], stats["restarts"]["crash"]) == (0, 0)
    for pid in old_pids:
        wait_dead(pid)


def test_several_sighups_in_a_row_are_safe(start_server, reload_module):
    server = start_server(workers=2, env=reload_module.env)
    with transaction.atomic():
        before = [tasks.record_span.offload(i, 0.3) for i in range(4)]
    running_worker(server, before[0])
    for version in (2, 3, 4):
        reload_module.rewrite(version)
        server.signal(signal.SIGHUP)
        time.sleep(0.2)
    wait_generation(server, 4, 2)
    assert holds_for(lambda: len(server.stats()["workers"]) == 2, 1.0)
    with transaction.atomic():
        after = [tasks.write_row.offload(i) for i in range(10, 16)]
        version = reload_module.version.offload()
    for handle in [*before, *after, version]:
        assert finished(handle).status == TaskStatus.SUCCESSFUL
    assert version.return_value == 4
    assert Row.objects.count() == 10
    stats = server.stats()
    assert stats["restarts"]["reload"] == 3
    assert (stats["counts"]["lost"], stats["restarts"]["crash"]) == (0, 0)


def test_one_worker_never_overlaps_tasks_across_a_reload(start_server):
    server = start_server(workers=1)
    with transaction.atomic():
        handles = [tasks.record_span.offload(i, 0.3) for i in range(3)]
    running_worker(server, handles[0])
    server.signal(signal.SIGHUP)
    with transaction.atomic():
        handles += [tasks.record_span.offload(i, 0.2) for i in range(3, 6)]
    wait_generation(server, 2, 1)
    with transaction.atomic():
        handles += [tasks.record_span.offload(i, 0.05) for i in range(6, 9)]
    spans = sorted(finished(h).return_value for h in handles)
    for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False):
        assert end <= next_start, spans
    assert len({h.task.worker_pid for h in handles}) == 2
    assert sorted(Row.objects.values_list("n", flat=True)) == list(range(9))


def test_a_retired_worker_that_cannot_exit_hands_its_ids_on_and_is_killed(start_server):
    # A task leaves a thread running, so its worker cannot exit once retired.
    server = start_server("--shutdown-timeout", "10", workers=1)
    for _ in range(5):  # short tasks: the worker is then sent an id ahead
        finished(tasks.add.offload(1, 1))
    with transaction.atomic():
        first = tasks.leave_a_thread_behind.offload(3, 600)
        after = [tasks.add.offload(i, 1) for i in range(5)]
    old_pid = running_worker(server, first)["pid"]
    server.known_pids.add(old_pid)
    server.signal(signal.SIGHUP)
    assert finished(first).return_value == old_pid
    # It said which ids it never claimed: the new worker runs them while it lingers.
    assert [finished(h).return_value for h in after] == [1, 2, 3, 4, 5]
    assert alive(old_pid), "the ids waited for the old worker's end"
    assert {h.task.worker_pid for h in after} != {old_pid}
    wait_dead(old_pid, 60)
    assert f"killed worker {old_pid}" in server.log()
    assert "idle for 10 s and still running" in server.log()


# -- workers that cannot boot ---------------------------------------------------------------


def test_workers_that_keep_failing_to_boot_stop_the_server(start_server):
    server = start_server(
        workers=1,
        env={"DJANGO_SETTINGS_MODULE": "tests.sup_broken_settings"},
        point_client=False,
        expect_start=False,
    )
    code = server.wait_exit(90)
    log = server.log()
    assert code != 0, log
    assert "cannot boot" in log
    assert "broken (on purpose)" in log
    assert "keep failing to boot" in log


def broken_deploy_server(start_server, tmp_path):
    marker = tmp_path / "broken"
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.sup_broken_settings",
        "LEEK_SUP_BREAK_FILE": str(marker),
    }
    return start_server(workers=1, env=env), marker


def test_a_reload_that_cannot_boot_keeps_the_old_workers_serving(start_server, tmp_path):
    server, marker = broken_deploy_server(start_server, tmp_path)
    first = finished(tasks.return_pid.offload())
    old_pid = first.return_value
    marker.touch()
    server.signal(signal.SIGHUP)
    wait_until(lambda: "the new workers cannot boot" in server.log(), 90, "the reload to give up")
    assert "cannot boot" in server.log()
    assert "broken (on purpose)" in server.log()
    after = finished(tasks.return_pid.offload())
    assert after.status == TaskStatus.SUCCESSFUL
    assert after.return_value == old_pid
    workers = server.stats()["workers"]
    assert [(w["pid"], w["generation"]) for w in workers] == [(old_pid, 1)]
    assert server.proc.poll() is None


def test_old_workers_serve_while_a_new_generation_fails_to_boot(start_server, tmp_path):
    server, marker = broken_deploy_server(start_server, tmp_path)
    old_pid = finished(tasks.return_pid.offload()).return_value
    marker.touch()
    server.signal(signal.SIGHUP)
    wait_until(lambda: "while booting; next try" in server.log(), 60, "a failed boot")
    handle = finished(tasks.return_pid.offload())
    log_when_done = server.log()
    assert handle.return_value == old_pid
    assert "the new workers cannot boot" not in log_when_done, (
        "the task waited for the reload to give up"
    )


def test_a_worker_killed_while_booting_is_replaced_without_counting_as_a_boot_failure(
    start_server, settings
):
    # Issue 13: only a worker that fails by itself counts towards giving up; six outside
    # kills of booting workers (five failures would stop the server) change nothing.
    server = start_server(
        workers=1,
        env={"DJANGO_SETTINGS_MODULE": "tests.sup_slow_settings", "LEEK_SUP_BOOT_DELAY": "3"},
        expect_start=False,
    )
    server._wait_started()
    settings.LEEK = {**settings.LEEK, "port": server.port}
    killed = set()

    def starting():
        return [
            w["pid"]
            for w in server.stats()["workers"]
            if w["state"] == "starting" and w["pid"] not in killed
        ]

    for _ in range(6):
        (pid,) = wait_until(starting, 30, "a booting worker")
        kill(server, pid)
        killed.add(pid)
        wait_dead(pid)
    handle = finished(tasks.return_pid.offload(), 90)
    assert handle.status == TaskStatus.SUCCESSFUL
    assert handle.return_value not in killed
    log = server.log()
    assert "while booting" not in log
    assert log.count("before it booted (not counted as a boot failure)") == 6
    assert "keep failing to boot" not in log
    assert server.stats()["restarts"]["crash"] == 6
    assert server.proc.poll() is None


def write_app(directory, name, body):
    """Write an app package `name` with `body` as its tasks module; return its tasks path."""
    package = directory / name
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    shutil.rmtree(package / "__pycache__", ignore_errors=True)
    path = package / "tasks.py"
    path.write_text(body)
    return path


def versioned_tasks(version):
    return (
        "from leek import Leek\n\nleek = Leek()\n\n\n"
        f"@leek.task\ndef version():\n    return {version}\n"
    )


def test_a_reload_with_a_syntax_error_in_tasks_py_keeps_the_old_workers_serving(
    start_server, tmp_path, monkeypatch
):
    # Issue 13: workers import every app's tasks module at boot, so broken task code fails
    # the new generation's boot instead of every task it would have run.
    name = f"sup_app_{uuid.uuid4().hex[:8]}"
    write_app(tmp_path, name, versioned_tasks(1))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(f"{name}.tasks")
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "LEEK_TEST_EXTRA_APPS": name}
    server = start_server(workers=2, env=env)
    assert finished(module.version.offload()).return_value == 1
    old_pids = {w["pid"] for w in booted(server)}
    write_app(tmp_path, name, versioned_tasks(2) + "def broken(:\n")
    server.signal(signal.SIGHUP)
    wait_until(lambda: "while booting" in server.log(), 60, "a failed boot")
    assert "SyntaxError" in server.log()
    during = [module.version.offload(), tasks.add.offload(1, 2)]
    wait_until(lambda: "the new workers cannot boot" in server.log(), 90, "the reload to give up")
    during += [module.version.offload(), tasks.add.offload(3, 4)]
    for handle in during:
        assert finished(handle).status == TaskStatus.SUCCESSFUL, handle.traceback
        assert handle.task.worker_pid in old_pids
    assert [h.return_value for h in during] == [1, 3, 1, 7]
    # The fix, and a reload: it is loaded.
    write_app(tmp_path, name, versioned_tasks(3))
    server.signal(signal.SIGHUP)
    new = wait_generation(server, 2, 2)
    assert not {w["pid"] for w in new} & old_pids
    assert finished(module.version.offload()).return_value == 3
    assert not Task.objects.filter(status=TaskStatus.FAILED).exists()


def test_a_task_module_named_in_the_settings_that_cannot_import_stops_the_server(
    start_server, tmp_path
):
    write_app(tmp_path, "sup_named", "import a_module_that_is_not_there\n")
    env = {
        "PYTHONPATH": f"{tmp_path}:{ROOT}",
        "LEEK_TEST_TASK_MODULES": "sup_named.tasks",
    }
    server = start_server(workers=1, env=env, point_client=False, expect_start=False)
    assert server.wait_exit(90) != 0
    log = server.log()
    assert "No module named 'a_module_that_is_not_there'" in log
    assert "keep failing to boot" in log


# -- SIGTERM / SIGINT: shutdown -------------------------------------------------------------


def test_sigterm_kills_a_task_past_the_shutdown_timeout_and_exits_0(start_server):
    server = start_server("--shutdown-timeout", "1", workers=1)
    handle = tasks.sleep_seconds.offload(30)
    pid = running_worker(server, handle)["pid"]
    server.signal(signal.SIGTERM)
    assert server.wait_exit(25) == 0, server.log()
    handle.refresh()
    assert handle.status == TaskStatus.FAILED
    assert handle.task.exception_class_path == LOST
    assert "by leek" in handle.error
    assert "not by leek" not in handle.error
    assert f"worker {pid}" in handle.error
    wait_dead(pid)


def test_sigint_lets_the_running_task_finish_and_exits_0(start_server):
    server = start_server(workers=1)
    handle = tasks.sleep_seconds.offload(2)
    pid = running_worker(server, handle)["pid"]
    server.signal(signal.SIGINT)
    assert server.wait_exit(60) == 0, server.log()
    assert handle.refresh().status == TaskStatus.SUCCESSFUL
    assert handle.return_value == 2
    wait_dead(pid)


def test_a_second_sigint_stops_at_once(start_server):
    server = start_server("--shutdown-timeout", "120", workers=1)
    handle = tasks.sleep_seconds.offload(120)
    pid = running_worker(server, handle)["pid"]
    server.signal(signal.SIGINT)
    wait_until(lambda: "SIGINT: finishing running tasks" in server.log(), 30, "the first SIGINT")
    assert handle.refresh().status == TaskStatus.RUNNING
    server.signal(signal.SIGINT)
    # As shells report a process that SIGINT stopped: 128 + 2.
    assert server.wait_exit(30) == 130, server.log()
    assert "second SIGINT: stopping at once" in server.log()
    handle.refresh()
    assert handle.status == TaskStatus.FAILED
    assert handle.task.exception_class_path == LOST
    assert "by leek" in handle.error
    assert "not by leek" not in handle.error
    wait_dead(pid)


def test_ctrl_c_to_the_whole_group_leaves_shutdown_to_the_supervisor(start_server):
    server = start_server(workers=2)
    handle = tasks.sleep_seconds.offload(2)
    pid = running_worker(server, handle)["pid"]
    pids = server.worker_pids()
    assert os.getpgid(server.pid) == server.pid
    assert all(os.getpgid(p) == server.pid for p in pids)
    os.killpg(server.pid, signal.SIGINT)
    assert server.wait_exit(60) == 0, server.log()
    assert handle.refresh().status == TaskStatus.SUCCESSFUL
    assert handle.task.worker_pid == pid
    assert "KeyboardInterrupt" not in server.log()
    for p in pids:
        wait_dead(p)


# -- a server that died ---------------------------------------------------------------------


def test_a_killed_server_takes_its_workers_and_their_children_with_it(start_server):
    first = start_server(workers=1)
    handle = tasks.sleep_with_child.offload(120)
    pid = running_worker(first, handle)["pid"]
    child = wait_until(lambda: Row.objects.filter(pid=pid).first(), 30, "the task's child").n
    first.known_pids.update({pid, child})
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait_exit(30) == -signal.SIGKILL
    # Issue 13: the orphaned worker noticed at once and took its task's child with it.
    wait_dead(pid, 10)
    wait_dead(child, 10)
    assert f"server {first.pid} is gone; killed 1 child process(es)" in first.log()
    assert holds_for(lambda: handle.refresh().status == TaskStatus.RUNNING, 1.0)
    start_server(workers=1)
    finished(handle, 30)
    assert handle.status == TaskStatus.FAILED
    assert handle.task.exception_class_path == LOST
    assert f"worker {pid}" in handle.error
    assert "found at the next start" in handle.error
    after = finished(tasks.return_pid.offload())
    assert after.status == TaskStatus.SUCCESSFUL


def test_an_idle_worker_of_a_killed_server_exits_too(start_server):
    first = start_server(workers=2)
    pids = [w["pid"] for w in booted(first)]
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait_exit(30) == -signal.SIGKILL
    for pid in pids:
        wait_dead(pid, 10)


def dead_pid():
    """Return the pid of a process that has just exited."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(30)
    return gone.pid


def left_running(pid, started_at):
    """Save a row as a worker `pid` on this host would have left it, claimed at `started_at`."""
    return Task.objects.create(
        callable_path="tests.tasks.return_pid",
        payload=b"",
        status=TaskStatus.RUNNING,
        worker_host=socket.gethostname(),
        worker_pid=pid,
        started_at=started_at,
        attempts=1,
    )


def test_a_pid_a_newer_process_took_does_not_hide_a_task_left_running(start_server):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        # Its worker's pid now names a process that began after the task did: an orphan.
        reused = left_running(sleeper.pid, timezone.now() - timedelta(minutes=10))
        # The same live pid, on a row claimed after that process began: maybe another
        # server's worker at work, left alone.
        live = left_running(sleeper.pid, timezone.now())
        # A dead pid, but claimed after the server started: its own worker's, not an orphan.
        later = left_running(dead_pid(), timezone.now() + timedelta(minutes=10))
        start_server(workers=1)
        wait_until(
            lambda: Task.objects.get(pk=reused.pk).status == TaskStatus.FAILED, 30, "the orphan"
        )
        row = Task.objects.get(pk=reused.pk)
        assert row.exception_class_path == LOST
        assert f"worker {sleeper.pid}" in row.traceback
        assert "found at the next start" in row.traceback
        assert Task.objects.get(pk=live.pk).status == TaskStatus.RUNNING
        assert Task.objects.get(pk=later.pk).status == TaskStatus.RUNNING
    finally:
        sleeper.kill()
        sleeper.wait(10)


@pytest.fixture
def database_not_up_yet(tmp_path):
    """Yield (environment of a server whose database does not answer, a function to bring it up).

    SQLite: the file's directory is a symlink made later. PostgreSQL, MariaDB: the server's
    port forwards to the real one once brought up.
    """
    if KIND != "sqlite":
        forwarder = Forwarder()
        yield forwarder.env, forwarder.start
        forwarder.close()
        return
    later = tmp_path / "later"

    def bring_up():
        later.symlink_to(Path(DB_NAME).parent, target_is_directory=True)

    yield {"LEEK_TEST_DB_NAME": str(later / Path(DB_NAME).name)}, bring_up


def test_a_server_started_before_its_database_waits_for_it(start_server, database_not_up_yet):
    orphan = left_running(dead_pid(), timezone.now() - timedelta(minutes=1))
    env, bring_up = database_not_up_yet
    server = start_server(workers=1, env=env)
    wait_until(lambda: "cannot write the losses of workers gone before" in server.log(), 30)
    stats = server.stats()
    assert stats["ready"] is None, stats
    assert stats["workers"][0]["state"] == "idle", stats
    assert holds_for(lambda: server.proc.poll() is None, 1.0), server.log()
    assert Task.objects.get(pk=orphan.pk).status == TaskStatus.RUNNING
    bring_up()
    wait_until(
        lambda: Task.objects.get(pk=orphan.pk).status == TaskStatus.FAILED, 30, "the orphan"
    )
    assert "found at the next start" in Task.objects.get(pk=orphan.pk).traceback
    assert finished(tasks.return_pid.offload()).status == TaskStatus.SUCCESSFUL
    assert "the database took the writes it had refused" in server.log()
    wait_until(lambda: server.stats()["ready"] == 0, 30, "the count of READY tasks")


def test_a_burst_started_before_its_database_runs_its_tasks_once_it_answers(
    start_server, database_not_up_yet
):
    handle = tasks.return_pid.offload()
    env, bring_up = database_not_up_yet
    server = start_server("--burst", env=env, point_client=False, expect_start=False)
    wait_until(lambda: "sweep failed" in server.log(), 60, "a sweep that fails")
    assert holds_for(lambda: server.proc.poll() is None, 1.5), server.log()
    bring_up()
    assert server.wait_exit(120) == 0, server.log()
    assert handle.refresh().status == TaskStatus.SUCCESSFUL


@requires_server_db
def test_a_loss_a_stopping_server_could_not_write_is_named_and_settled_at_the_next_start(
    start_server,
):
    forwarder = Forwarder()
    forwarder.start()
    try:
        server = start_server(workers=1, env=forwarder.env)
        blocker = tasks.sleep_seconds.offload(60)
        worker = running_worker(server, blocker)
        forwarder.close()  # the server's database goes away, and stays away
        kill(server, worker["pid"])
        wait_until(lambda: f"cannot write the loss of task {blocker.id}" in server.log(), 30)
        server.signal(signal.SIGTERM)
        assert server.wait_exit(60) == 0, server.log()
    finally:
        forwarder.close()
    assert f"stopping without writing the loss of task {blocker.id}" in server.log()
    assert blocker.refresh().status == TaskStatus.RUNNING
    start_server(workers=1)
    assert finished(blocker).task.exception_class_path == LOST
    assert "found at the next start" in blocker.error


# -- SIGTTIN / SIGTTOU / SIGUSR1 / stats ----------------------------------------------------


def test_sigttin_adds_a_worker_and_sigttou_removes_one_but_never_the_last(start_server):
    server = start_server(workers=1)
    server.signal(signal.SIGTTIN)
    wait_until(lambda: len(booted(server)) == 2, 60, "a second worker")
    assert server.stats()["size"] == 2
    server.worker_pids()
    server.signal(signal.SIGTTOU)
    wait_until(lambda: len(server.stats()["workers"]) == 1, 60, "one worker again")
    assert server.stats()["size"] == 1
    server.signal(signal.SIGTTOU)
    assert holds_for(lambda: server.stats()["size"] == 1 and len(booted(server)) == 1, 1.5), (
        server.stats()
    )
    with transaction.atomic():
        handles = [tasks.return_pid.offload() for _ in range(3)]
    assert all(finished(h).status == TaskStatus.SUCCESSFUL for h in handles)
    assert server.stats()["restarts"]["crash"] == 0


def test_sigusr1_logs_a_status_line_per_worker(start_server):
    server = start_server(workers=2)
    handle = tasks.sleep_seconds.offload(2)
    busy = running_worker(server, handle)["pid"]
    pids = [w["pid"] for w in booted(server)]
    server.signal(signal.SIGUSR1)

    def status_lines():
        lines = [line for line in server.log().splitlines() if "status: worker" in line]
        return len(lines) >= 2 and lines

    lines = wait_until(status_lines, 30, "status lines")
    assert "status: " in server.log()
    for pid in pids:
        assert any(f"'pid': {pid}," in line for line in lines), (pid, lines)
    busy_line = next(line for line in lines if f"'pid': {busy}," in line)
    assert "'state': 'busy'" in busy_line
    assert f"'task': {handle.id}," in busy_line
    assert "tests.tasks.sleep_seconds" in busy_line


def test_stats_show_the_busy_worker_and_the_counts(start_server):
    server = start_server(workers=1)
    assert finished(tasks.add.offload(1, 1)).status == TaskStatus.SUCCESSFUL
    assert finished(tasks.raise_value_error.offload()).status == TaskStatus.FAILED
    assert finished(tasks.crash_with_os_exit.offload(3)).status == TaskStatus.FAILED
    server.wait_workers(1)
    handle = tasks.sleep_seconds.offload(3)
    running_worker(server, handle)

    def busy():
        stats = server.stats()
        workers = [w for w in stats["workers"] if w["task"] == handle.id]
        return workers and workers[0]["running_for"] and (stats, workers[0])

    stats, worker = wait_until(busy, 30, "running_for > 0")
    assert worker["state"] == "busy"
    assert worker["callable"] == "tests.tasks.sleep_seconds"
    assert worker["running_for"] > 0
    assert worker["generation"] == 1
    assert worker["pid"] == handle.refresh().task.worker_pid
    assert worker["tasks_done"] == 0  # a replacement: the first worker died in crash_with_os_exit
    counts, restarts = stats["counts"], stats["restarts"]
    assert {"done", "failed", "lost"} <= counts.keys()
    assert {"crash", "reload"} <= restarts.keys()
    assert (counts["done"], counts["failed"], counts["lost"]) == (1, 1, 1)
    assert (restarts["crash"], restarts["reload"]) == (1, 0)
    assert stats["generation"] == 1
    assert stats["size"] == 1
    assert {"queued", "ready"} <= stats.keys()
    server.signal(signal.SIGHUP)
    wait_until(lambda: server.stats()["restarts"]["reload"] == 1, 30, "the reload count")
    assert finished(handle).status == TaskStatus.SUCCESSFUL
