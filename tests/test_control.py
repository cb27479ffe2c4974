"""The operator's verbs (leek.control) on real rows, without a server."""

from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from leek import conf, control, serialize
from leek.models import Attempt, ControlAction, PoolPause, Server, Task, TaskStatus
from tests import tasks


def row(status=TaskStatus.READY, pool="default", **values):
    return Task.objects.create(
        callable_path="tests.tasks.add",
        payload=serialize.dumps_call(tasks.add, (1, 2), {}),
        status=status,
        pool=pool,
        **values,
    )


def failed_row():
    started = timezone.now() - timedelta(seconds=5)
    return row(
        TaskStatus.FAILED,
        attempts=1,
        started_at=started,
        finished_at=started + timedelta(seconds=1),
        worker_host="web1",
        worker_pid=4321,
        exception_class_path="builtins.ValueError",
        traceback="Traceback (most recent call last):\nValueError: bad value",
    )


def test_retry_makes_a_failed_task_ready_and_keeps_its_error_in_history():
    task = failed_row()
    ready = row()
    assert control.retry([task.pk, ready.pk, 999_999], "alice") == [task.pk]
    task.refresh_from_db()
    assert task.status == TaskStatus.READY
    assert task.started_at is None
    assert task.finished_at is None
    assert task.worker_pid is None
    assert task.run_after <= timezone.now()
    assert (task.control_action, task.control_by) == (ControlAction.RETRY, "alice")
    assert task.control_at is not None
    [earlier] = task.attempt_list
    assert earlier.worker == "web1:4321"
    assert earlier.exception_class_path == "builtins.ValueError"
    assert "ValueError: bad value" in earlier.traceback
    assert Task.objects.get(pk=ready.pk).status == TaskStatus.READY  # untouched
    # A second retry finds it READY: nothing to do.
    assert control.retry([task.pk], "alice") == []


def test_cancel_ends_ready_tasks_failed_with_cancelled():
    task = row()
    running = row(TaskStatus.RUNNING, worker_pid=1, worker_host="h")
    assert control.cancel([task.pk, running.pk], "bob") == [task.pk]
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED
    assert task.exception_class_path == "leek.exceptions.Cancelled"
    assert task.exception_message == "leek.exceptions.Cancelled: cancelled by bob"
    assert (task.control_action, task.control_by) == (ControlAction.CANCEL, "bob")
    assert task.finished_at is not None
    assert Task.objects.get(pk=running.pk).status == TaskStatus.RUNNING
    # A cancelled task can be retried; the cancel stays in its history.
    assert control.retry([task.pk], "bob") == [task.pk]
    task.refresh_from_db()
    assert [a.exception_class_path for a in task.attempt_list] == ["leek.exceptions.Cancelled"]
    assert task.attempt_list[0].worker == ""


def test_terminate_records_the_request_on_running_tasks_only():
    started = timezone.now() - timedelta(minutes=1)
    running = row(TaskStatus.RUNNING, worker_pid=77, worker_host="h", started_at=started)
    other = row(TaskStatus.RUNNING, worker_pid=78, worker_host="h", started_at=started)
    ready = row()
    assert control.terminate([running.pk, ready.pk], "carol") == [running.pk]
    running.refresh_from_db()
    assert running.status == TaskStatus.RUNNING
    assert (running.control_action, running.control_by) == (ControlAction.TERMINATE, "carol")
    held = {running.pk: 77, other.pk: 78, ready.pk: 79}
    assert Task.objects.terminations_for(held) == [(running.pk, 77, "carol")]
    # Another pid holds that id now (a re-run): not this worker's to kill.
    assert Task.objects.terminations_for({running.pk: 99}) == []
    # A request made before the attempt that runs now (it raised and was retried meanwhile)
    # does not kill the new attempt.
    Task.objects.filter(pk=running.pk).update(started_at=timezone.now() + timedelta(seconds=5))
    assert Task.objects.terminations_for(held) == []


def test_pause_and_resume_a_pool():
    assert control.paused_pools() == set()
    assert control.pause("email", "dave") is True
    assert control.pause("email", "dave") is False
    assert control.paused_pools() == {"email"}
    assert PoolPause.objects.get(pool="email").paused_by == "dave"
    assert control.resume("email", "dave") is True
    assert control.resume("email", "dave") is False
    assert control.paused_pools() == set()


def test_backlog_counts_ready_tasks_per_pool_with_the_oldest_due():
    now = timezone.now()
    row(run_after=now - timedelta(minutes=5))
    row(run_after=now - timedelta(minutes=1))
    row(pool="email", run_after=now + timedelta(hours=1))
    row(TaskStatus.SUCCESSFUL)
    found = {b.pool: b for b in control.backlog()}
    assert found["default"].ready == 2
    assert abs((found["default"].oldest - (now - timedelta(minutes=5))).total_seconds()) < 1
    assert found["email"] == control.PoolBacklog("email", 1, None)


def test_servers_are_marked_stale_after_the_lease(settings):
    settings.LEEK = {**settings.LEEK, "server_lease": 30}
    now = timezone.now()
    live = Server.objects.create(host="a", pid=1, heartbeat_at=now)
    gone = Server.objects.create(host="b", pid=2, heartbeat_at=now - timedelta(seconds=31))
    Server.objects.create(host="c", pid=3, stopped_at=now - timedelta(days=1))
    stopped = Server.objects.create(host="d", pid=4, stopped_at=now)
    found = {s.pk: s for s in control.servers()}
    assert set(found) == {live.pk, gone.pk, stopped.pk}
    assert not found[live.pk].stale
    assert found[live.pk].is_live
    assert found[gone.pk].stale
    assert not found[gone.pk].is_live
    assert not found[stopped.pk].stale
    assert not found[stopped.pk].is_live


def test_attempt_of_a_cancel_reads_back():
    entry = Attempt(None, timezone.now(), "", "leek.exceptions.Cancelled", "x").to_json()
    assert Attempt.from_json(entry).started_at is None


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("15m", 900), ("12h", 43200), ("7d", 604800)]
)
def test_durations(text, seconds):
    assert conf.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "d", "7w", "-1d", "0s", "1.5h"])
def test_bad_durations_say_how_to_write_one(text):
    with pytest.raises(ValueError, match="30s, 15m, 12h or 7d"):
        conf.parse_duration(text)


def test_operating_settings():
    settings = conf.from_mapping({"retention": {"SUCCESSFUL": "7d", "FAILED": 60}})
    assert settings.retention == (("FAILED", 60.0), ("SUCCESSFUL", 604800.0))
    assert settings.replace(workers=2).retention == settings.retention
    assert (settings.heartbeat_interval, settings.server_lease) == (5.0, 60.0)
    with pytest.raises(ImproperlyConfigured, match=r"LEEK\['retention'\]\['FAILED'\]"):
        conf.from_mapping({"retention": {"FAILED": "a month"}})
    with pytest.raises(ImproperlyConfigured, match="SUCCESSFUL or FAILED"):
        conf.from_mapping({"retention": {"READY": "7d"}})
    with pytest.raises(ImproperlyConfigured, match="server_lease"):
        conf.from_mapping({"server_lease": 5, "heartbeat_interval": 5})
    with pytest.raises(ImproperlyConfigured, match="heartbeat_interval"):
        conf.from_mapping({"heartbeat_interval": 0})
