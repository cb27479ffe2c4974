"""Unique keys, concurrency limits, rates and snooze, against real servers and processes."""

import threading
import time
from datetime import timedelta

import psutil
import pytest
from django.db import connections, transaction
from django.utils import timezone

from leek import Snooze, client, hotpath, throttle
from leek.models import PoolPause, Task, TaskLimit, TaskStatus
from leek.runner import database
from leek.states import Claim
from tests import tasks
from tests.conftest import KIND, wait_until
from tests.models import Row


def finished(handle, timeout=60):
    return handle.wait(timeout)


def test_options_are_checked_when_declared():
    with pytest.raises(ValueError, match="rate='ten a minute'"):
        tasks.add.using(rate="ten a minute")
    with pytest.raises(ValueError, match="max_concurrency=0"):
        tasks.add.using(max_concurrency=0)
    with pytest.raises(ValueError, match="limits nothing by itself"):
        tasks.add.using(concurrency_key="k")
    with pytest.raises(ValueError, match="unique_until='never'"):
        tasks.add.using(unique_key="k", unique_until="never")
    with pytest.raises(ValueError, match="unique_key of tests.tasks.add gave ''"):
        tasks.add.using(unique_key=lambda a, b: "").offload(1, 2)
    with pytest.raises(ValueError, match=r"Snooze\(-1\)"):
        Snooze(-1)
    assert not Task.objects.exists()


@pytest.fixture
def notified_nowhere(monkeypatch):
    """No notifications: these tests need no server."""
    monkeypatch.setattr(client, "notify", lambda pool, priority, ids: True)


def _claim(task_id, pid=4242):
    with hotpath.transaction(database()) as writer:
        return writer.claim(task_id, pid, "host")


def test_a_key_lets_its_tasks_start_in_order_and_up_to_its_limit(notified_nowhere):
    two = tasks.add.using(concurrency_key="pair", max_concurrency=2)
    first, second, third = (h.id for h in two.offload_many([(1, 1), (2, 2), (3, 3)]))
    urgent = two.using(priority=5).offload(4, 4).id
    plain = tasks.add.offload(0, 0).id
    # The sweep hands out the first two of the key, the urgent one first; and plain tasks
    # as ever, through the plain query.
    assert throttle.due([], 100) == [(urgent, 5), (first, 0)]
    assert Task.objects.due([], 100) == [(plain, 0)]
    # Two come before the third: it may not start, while the first may.
    assert _claim(third) is None
    assert Task.objects.get(pk=third).status == TaskStatus.READY
    assert _claim(first).limited
    assert throttle.due([], 100) == [(urgent, 5)]
    assert _claim(urgent).limited
    assert throttle.due([], 100) == []  # full
    assert _claim(second) is None
    with hotpath.transaction(database()) as writer:
        assert writer.succeed(first, Claim(4242, "host", 1), b"N.")
    assert throttle.due([], 100) == [(second, 0)]
    # A paused pool's tasks are not handed out; and a plain claim never takes a limited task.
    PoolPause.objects.create(pool="default")
    assert throttle.due([], 100) == []
    PoolPause.objects.all().delete()
    assert _claim(second).limited
    assert _claim(plain).limited is False


def test_a_key_shared_by_tasks_of_other_limits_refuses_when_full(notified_nowhere):
    # Three run under a limit of 3; a task of the same key limited to 1, and paced, finds
    # the key over its own limit: refused, and the claim's transaction is not broken.
    wide = tasks.add.using(concurrency_key="shared", max_concurrency=3)
    narrow = tasks.add.using(concurrency_key="shared", max_concurrency=1, rate="100/s")
    running = [h.id for h in wide.offload_many([(1, 1), (2, 2), (3, 3)])]
    for task_id in running:
        assert _claim(task_id).limited
    late = narrow.offload(4, 4).id
    assert _claim(late) is None
    assert Task.objects.get(pk=late).status == TaskStatus.READY


def test_eager_mode_runs_a_limited_task_as_it_is_offloaded(settings):
    settings.LEEK = {**settings.LEEK, "eager": True}
    paced = tasks.add.using(rate="1/h", concurrency_key="eager")
    assert [paced.offload(n, n).return_value for n in range(3)] == [0, 2, 4]


def test_a_rate_spaces_the_starts_of_its_key(notified_nowhere):
    paced = tasks.add.using(rate="2/s", concurrency_key="api")
    first, second = (h.id for h in paced.offload_many([(1, 1), (2, 2)]))
    assert throttle.due([], 100) == [(first, 0)]  # one at a time
    assert throttle.next_start([]) is None
    assert _claim(first).limited
    assert _claim(second) is None
    assert throttle.due([], 100) == []
    limit = TaskLimit.objects.get(key="api")
    assert throttle.next_start([]) == limit.next_start_at
    started = Task.objects.get(pk=first).started_at
    assert (limit.next_start_at - started).total_seconds() == pytest.approx(0.5)
    TaskLimit.objects.filter(key="api").update(next_start_at=started)  # as if 0.5 s went by
    assert throttle.due([], 100) == [(second, 0)]
    assert _claim(second).limited


def test_retention_forgets_the_rows_of_idle_keys(notified_nowhere):
    from leek import retention

    tasks.add.using(max_concurrency=1, concurrency_key="busy").offload(1, 1)
    now = timezone.now()
    TaskLimit.objects.create(key="busy")
    TaskLimit.objects.create(key="idle")
    TaskLimit.objects.create(key="paced", next_start_at=now + timedelta(hours=1))
    TaskLimit.objects.create(key="paced-long-ago", next_start_at=now - timedelta(hours=1))
    assert retention.forget_limits(now) == 2
    assert set(TaskLimit.objects.values_list("key", flat=True)) == {"busy", "paced"}


def _race(offload, threads=8):
    """Call offload() from `threads` threads at once; return the ids it returned."""
    barrier = threading.Barrier(threads)
    ids, errors = [], []

    def run():
        try:
            barrier.wait(10)
            ids.append(offload().id)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connections.close_all()

    runners = [threading.Thread(target=run) for _ in range(threads)]
    for thread in runners:
        thread.start()
    for thread in runners:
        thread.join(60)
    assert not errors
    return ids


def _status(task_id):
    return Task.objects.get(pk=task_id).status


def test_unique_keys_snooze_and_a_lost_worker_freeing_its_key(start_server):
    report = tasks.add.using(unique_key=lambda a, b: f"report-{a}")
    ids = _race(lambda: report.offload(7, 1))
    assert len(ids) == 8
    assert len(set(ids)) == 1
    assert Task.objects.filter(unique_key="report-7").count() == 1
    # Inside an atomic block the holder is found too, and a rollback of the block takes
    # its own offload away with it.
    with transaction.atomic():
        other = report.offload(8, 1).id
        assert report.offload(8, 2).id == other
        assert report.offload(7, 2).id == ids[0]

    def offload_and_roll_back():
        with transaction.atomic():
            report.offload(9, 1)
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        offload_and_roll_back()
    assert not Task.objects.filter(unique_key="report-9").exists()

    start_server(workers=2)
    wait_until(lambda: _status(ids[0]) == TaskStatus.SUCCESSFUL, 60, "the unique task")
    again = finished(report.offload(7, 1))
    assert again.id != ids[0]
    assert again.return_value == 8

    # unique_until="start": a RUNNING task no longer holds its key; "end": it does.
    for until, same in (("start", False), ("end", True)):
        slow = tasks.sleep_seconds.using(unique_key=f"slow-{until}", unique_until=until)
        first = slow.offload(1.5)
        wait_until(lambda: _status(first.id) == TaskStatus.RUNNING, 30, "the slow task")  # noqa: B023
        assert (slow.offload(0).id == first.id) is same
        finished(first)
    assert finished(slow.offload(0)).id != first.id  # ended: the key is free again

    # Snooze: READY again after the seconds asked for, its attempt given back.
    snoozed = finished(tasks.snooze_first_time.offload(1, 0.5))
    assert snoozed.status == TaskStatus.SUCCESSFUL
    row = snoozed.task
    assert row.attempts == 1
    [pause] = row.attempt_list[:-1]
    assert pause.exception_class_path == "leek.exceptions.Snooze"
    assert "snoozed for 0.5 s" in pause.traceback
    assert (row.started_at - pause.finished_at).total_seconds() >= 0.5

    # A worker that dies holding a key's only slot frees it by the worker-lost rule.
    solo = {"concurrency_key": "solo", "max_concurrency": 1}
    crash = tasks.crash_with_os_exit.using(**solo).offload()
    after = tasks.add.using(**solo).offload(1, 2)
    assert finished(after).return_value == 3
    assert finished(crash).error.startswith("leek.exceptions.WorkerLost")
    assert crash.task.started_at < after.task.started_at


def _cpu_seconds(servers):
    """Return the CPU time used so far by the servers and their workers."""
    total = 0.0
    for server in servers:
        for pid in [server.pid, *server.worker_pids()]:
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
    return total


def _offload_to_each(servers, settings, task, calls):
    """Offload `calls` in turns through each server, so that both are told of tasks."""
    handles = []
    for i, server in enumerate(servers):
        settings.LEEK = {**settings.LEEK, "port": server.port}
        handles += task.offload_many(calls[i :: len(servers)])
    return sorted(handles, key=lambda h: h.id)


def test_limits_hold_across_two_servers(start_server, settings):
    servers = [start_server(workers=2), start_server(workers=2)]

    # max_concurrency=1: never two at once, in the order offloaded.
    one = tasks.record_span.using(concurrency_key="span", max_concurrency=1)
    handles = _offload_to_each(servers, settings, one, [(n, 0.02) for n in range(50)])
    spans = [finished(h, 120).return_value for h in handles]
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end
    assert Row.objects.count() == 50

    # rate="20/s": no second holds more than 20 starts, and the waiting costs little.
    skipped = sum(s.stats()["skipped"] for s in servers)
    cpu, began = _cpu_seconds(servers), time.monotonic()
    paced = tasks.add.using(rate="20/s")
    handles = _offload_to_each(servers, settings, paced, [(n, 0) for n in range(200)])
    for handle in handles:
        finished(handle, 120)
    took = time.monotonic() - began
    used = _cpu_seconds(servers) - cpu
    skipped = sum(s.stats()["skipped"] for s in servers) - skipped
    starts = sorted(
        Task.objects.filter(callable_path="tests.tasks.add").values_list("started_at", flat=True)
    )
    assert len(starts) == 200
    for i, start in enumerate(starts):
        window = [t for t in starts[i : i + 25] if (t - start).total_seconds() < 1.0]
        assert len(window) <= 20, f"{len(window)} starts within 1 s of {start}"
    # A claim that a key refuses is made once for each id announced or swept, not again
    # and again: a few hundred at most, and the CPU of servers and workers stays low.
    figures = f"{KIND}: 200 tasks at 20/s in {took:.1f} s, {used:.2f} s CPU, {skipped} skipped"
    assert skipped < 600, figures
    assert used < took * 0.6, figures
    assert TaskLimit.objects.filter(key="tests.tasks.add").exists()
