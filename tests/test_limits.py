"""Memory, time and task-count limits, and retries, against a real server."""

import psutil

from leek.models import Task, TaskStatus
from tests import tasks
from tests.conftest import wait_until
from tests.models import Row

LOST = "leek.exceptions.WorkerLost"


def done(handle, timeout=60):
    return handle.wait(timeout)


def _gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def test_a_worker_over_max_memory_is_replaced_after_its_task(start_server):
    server = start_server("--max-memory", "150")
    big = done(tasks.allocate_mb.offload(250))
    assert big.status == TaskStatus.SUCCESSFUL
    pid = big.return_value
    after = done(tasks.return_pid.offload())
    assert after.status == TaskStatus.SUCCESSFUL
    assert after.return_value != pid
    wait_until(lambda: _gone(pid), 30, "the big worker to exit")
    assert server.stats()["restarts"]["memory"] == 1


def test_a_worker_past_max_memory_hard_is_killed_mid_task(start_server):
    server = start_server("--max-memory-hard", "300")
    handle = done(tasks.allocate_forever.offload(), timeout=120)
    assert handle.status == TaskStatus.FAILED
    assert handle.task.exception_class_path == "leek.exceptions.WorkerLost"
    assert "max-memory-hard 300 MB" in handle.error
    assert "SIGKILL" in handle.error
    assert done(tasks.add.offload(1, 1)).status == TaskStatus.SUCCESSFUL
    assert server.stats()["restarts"]["memory"] == 1


def test_a_task_past_its_timeout_is_killed_with_its_children(start_server):
    server = start_server("--task-timeout", "2")
    handle = tasks.sleep_with_child.offload(60)
    wait_until(lambda: Row.objects.exists(), 60, "the child to start")
    child = Row.objects.get()
    done(handle, timeout=60)
    assert handle.status == TaskStatus.FAILED
    assert handle.task.exception_class_path == "leek.exceptions.TaskTimedOut"
    assert "time limit of 2 s" in handle.error
    wait_until(lambda: _gone(child.n), 30, "the task's child process to die")
    wait_until(lambda: _gone(child.pid), 30, "the worker to die")
    after = done(tasks.add.offload(2, 2))
    assert after.return_value == 4
    assert after.task.worker_pid != child.pid
    assert server.stats()["restarts"]["timeout"] == 1


def test_a_task_timeout_overrides_the_default(start_server):
    start_server("--task-timeout", "600")
    handle = done(tasks.sleep_past_own_timeout.offload(60), timeout=60)
    assert handle.task.exception_class_path == "leek.exceptions.TaskTimedOut"
    assert "time limit of 1 s" in handle.error


def test_workers_are_recycled_after_max_tasks(start_server):
    server = start_server("--max-tasks-per-worker", "3")
    pids = [done(tasks.return_pid.offload()).return_value for _ in range(8)]
    assert len(set(pids)) >= 2
    assert pids[:3] == [pids[0]] * 3
    assert server.stats()["restarts"]["tasks"] >= 1


def test_a_raising_task_is_retried_with_backoff(start_server):
    start_server()
    handle = tasks.fail_until_third_call.offload(9)
    wait_until(lambda: handle.refresh().is_finished, 60, "the retries")
    assert handle.status == TaskStatus.SUCCESSFUL
    assert handle.return_value == 3
    assert handle.task.attempts == 3
    assert Row.objects.filter(n=9).count() == 3
    # Each attempt that raised is kept; the last one succeeded and has no error.
    attempts = handle.task.attempt_list
    assert [a.exception_class_path for a in attempts] == ["builtins.RuntimeError"] * 2 + [""]
    assert "call 1 fails" in attempts[0].traceback
    assert "call 2 fails" in attempts[1].traceback
    assert all(a.started_at <= a.finished_at for a in attempts)
    assert attempts[0].finished_at <= attempts[1].started_at
    assert handle.task.traceback == ""


def test_retries_run_out(start_server):
    start_server()
    handle = tasks.always_fail.offload()
    wait_until(lambda: handle.refresh().is_finished, 60, "the retries")
    assert handle.status == TaskStatus.FAILED
    assert handle.task.attempts == 2
    assert "RuntimeError: always" in handle.error
    attempts = handle.task.attempt_list
    assert [a.exception_class_path for a in attempts] == ["builtins.RuntimeError"] * 2


def test_a_lost_task_runs_again_only_lost_retries_times(start_server):
    server = start_server()
    handle = tasks.crash_every_time.offload()
    wait_until(lambda: handle.refresh().is_finished, 60, "the lost task to settle")
    assert handle.status == TaskStatus.FAILED
    assert handle.task.attempts == 2
    assert "exited with code 7" in handle.error
    first, second = handle.task.attempt_list
    assert "exited with code 7" in first.traceback
    assert first.worker != second.worker
    assert server.stats()["restarts"]["crash"] == 2
    assert Task.objects.filter(status=TaskStatus.RUNNING).count() == 0


def test_a_task_that_raised_once_still_has_its_lost_retries(start_server, tmp_path):
    # Retries and lost_retries are counted apart: an attempt that raised spends a retry,
    # one whose worker died spends a lost retry.
    start_server()
    handle = tasks.raise_then_crash.offload(str(tmp_path / "raised"))
    wait_until(lambda: handle.refresh().is_finished, 60, "the task to settle")
    assert handle.status == TaskStatus.FAILED
    paths = [a.exception_class_path for a in handle.task.attempt_list]
    assert paths == ["builtins.RuntimeError", LOST, LOST]
