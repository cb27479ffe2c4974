"""The admin as a control room: Retry, Cancel, Terminate on a real server; the live page."""

import html
import re
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from leek.models import PoolPause, Server, Task, TaskStatus
from tests import tasks
from tests.conftest import wait_until

LIST_URL = "/admin/leek/task/"
LIVE_URL = "/admin/leek/server/"


@pytest.fixture(autouse=True)
def _clean_users():
    LogEntry.objects.all().delete()
    User.objects.all().delete()


@pytest.fixture
def operator():
    """A staff user who may view and change tasks (so may act on them), logged in by password."""
    user = User.objects.create_user("olga", password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="leek",
            codename__in=["view_task", "change_task", "view_server"],
        )
    )
    browser = Client()
    assert browser.login(username="olga", password="pw")
    return browser


@pytest.fixture
def viewer():
    """A staff user who may only look."""
    user = User.objects.create_user("vera", password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="leek", codename__in=["view_task", "view_server"]
        )
    )
    browser = Client()
    assert browser.login(username="vera", password="pw")
    return browser


def act(browser, action, *task_ids):
    response = browser.post(
        LIST_URL, {"action": action, "_selected_action": [str(i) for i in task_ids]}, follow=True
    )
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def status(task_id):
    return Task.objects.get(pk=task_id).status


def logged(task_id):
    return list(
        LogEntry.objects.filter(object_id=str(task_id)).values_list(
            "user__username", "change_message"
        )
    )


def test_retry_runs_a_failed_task_again_and_keeps_the_first_error(start_server, operator):
    start_server()
    handle = tasks.raise_value_error.offload(message="first-failure")
    wait_until(lambda: status(handle.id) == TaskStatus.FAILED, message="the first failure")
    done = tasks.add.offload(1, 2)
    wait_until(lambda: status(done.id) == TaskStatus.SUCCESSFUL, message="add")
    before = timezone.now()
    text = act(operator, "retry", handle.id, done.id)
    assert f"Retried 1 task ({handle.id})" in text
    assert f"Not retried: 1 task ({done.id}); only FAILED tasks can be." in text
    wait_until(
        lambda: (
            Task.objects.get(pk=handle.id).attempts == 2 and status(handle.id) == TaskStatus.FAILED
        ),
        message="the second attempt",
    )
    task = Task.objects.get(pk=handle.id)
    first, second = task.attempt_list
    assert "first-failure" in first.traceback
    assert "first-failure" in second.traceback
    assert (task.control_action, task.control_by) == ("retry", "olga")
    assert task.control_at >= before
    assert logged(handle.id) == [("olga", "Retried from the admin.")]
    assert logged(done.id) == []
    page = html.unescape(operator.get(f"{LIST_URL}{handle.id}/change/").content.decode())
    assert "retry by olga" in page
    assert page.count("first-failure") >= 2


def test_cancel_ends_a_ready_task_that_never_starts(start_server, operator):
    start_server()
    later = tasks.add.using(run_after=timedelta(seconds=3)).offload(1, 2)
    text = act(operator, "cancel", later.id)
    assert f"Cancelled 1 task ({later.id})" in text
    task = Task.objects.get(pk=later.id)
    assert task.status == TaskStatus.FAILED
    assert task.exception_class_path == "leek.exceptions.Cancelled"
    assert "cancelled by olga" in task.traceback
    assert logged(later.id) == [("olga", "Cancelled from the admin.")]
    # Past its run_after, the server still does not run it.
    probe = tasks.add.offload(3, 4)
    wait_until(lambda: status(probe.id) == TaskStatus.SUCCESSFUL, message="a later task")
    wait_until(lambda: timezone.now() > task.run_after + timedelta(seconds=1), 10)
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED
    assert task.started_at is None


def test_terminate_kills_the_worker_of_a_running_task(start_server, operator):
    server = start_server(workers=2)
    running = tasks.sleep_seconds.offload(60)
    wait_until(lambda: status(running.id) == TaskStatus.RUNNING, message="the task to start")
    pid = Task.objects.get(pk=running.id).worker_pid
    text = act(operator, "terminate", running.id)
    assert f"Terminated 1 task ({running.id})" in text
    wait_until(lambda: status(running.id) == TaskStatus.FAILED, 15, "the termination")
    task = Task.objects.get(pk=running.id)
    assert task.exception_class_path == "leek.exceptions.Terminated"
    assert "terminated by olga" in task.traceback
    assert logged(running.id) == [("olga", "Terminated from the admin.")]
    # A replacement worker starts, and the pool keeps serving.
    workers = server.wait_workers(2)
    assert pid not in [w["pid"] for w in workers]
    after = tasks.add.offload(2, 2)
    wait_until(lambda: status(after.id) == TaskStatus.SUCCESSFUL, message="a task after it")


def test_a_viewer_sees_no_actions_and_cannot_post_them(viewer):
    row = Task.objects.create(
        callable_path="tests.tasks.add", payload=b"", status=TaskStatus.FAILED
    )
    text = html.unescape(viewer.get(LIST_URL).content.decode())
    assert "Retry the selected" not in text
    act(viewer, "retry", row.pk)
    assert status(row.pk) == TaskStatus.FAILED
    assert logged(row.pk) == []


def live_body(browser):
    response = browser.get(f"{LIVE_URL}live.json")
    assert response.status_code == 200
    return html.unescape(response.json()["html"])


def test_the_live_page_is_linked_from_the_admin_index(operator):
    text = operator.get("/admin/").content.decode()
    assert f'href="{LIVE_URL}"' in text
    page = operator.get(LIVE_URL)
    assert page.status_code == 200
    assert "leek: servers, workers and backlog" in page.content.decode()


def test_the_live_page_shows_servers_workers_and_the_backlog(operator):
    now = timezone.now()
    Server.objects.create(
        host="web-1",
        pid=100,
        address="127.0.0.1:8002",
        started_at=now - timedelta(hours=2),
        heartbeat_at=now,
        workers=[
            {
                "pid": 101,
                "state": "busy",
                "generation": 1,
                "task": 77,
                "callable": "tests.tasks.sleep_seconds",
                "task_since": (now - timedelta(seconds=42)).isoformat(),
                "rss_mb": 51.5,
                "tasks_done": 3,
            },
            {"pid": 102, "state": "idle", "generation": 1, "rss_mb": 40.0, "tasks_done": 9},
        ],
    )
    Server.objects.create(
        host="web-2",
        pid=200,
        started_at=now - timedelta(hours=3),
        heartbeat_at=now - timedelta(hours=1),
    )
    Task.objects.create(
        callable_path="tests.tasks.add",
        payload=b"",
        pool="emails",
        run_after=now - timedelta(minutes=3),
    )
    text = live_body(operator)
    one = text[text.index('data-server="web-1:100"') : text.index('data-server="web-2:200"')]
    assert "live" in one
    assert "127.0.0.1:8002" in one
    assert re.search(r"<td>101</td><td>busy</td>", one)
    assert "tests.tasks.sleep_seconds" in one
    assert re.search(r"4\d\.\d s", one)  # running for about 42 s
    assert "<td>102</td><td>idle</td>" in one
    assert "STALE" in text[text.index('data-server="web-2:200"') :]
    backlog = text[text.index('class="leek-backlog"') :]
    assert re.search(r">emails</a></td>\s*<td>1</td><td>3 min 0\d s</td>", backlog)


def test_pause_and_resume_from_the_live_page(operator):
    Task.objects.create(callable_path="tests.tasks.add", payload=b"", pool="emails")
    assert 'value="pause">Pause<' in live_body(operator)
    page = operator.get(LIVE_URL).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    strict = Client(enforce_csrf_checks=True)
    strict.cookies = operator.cookies
    refused = strict.post(f"{LIVE_URL}pause/", {"pool": "emails", "verb": "pause"})
    assert refused.status_code == 403
    assert not PoolPause.objects.exists()
    response = strict.post(
        f"{LIVE_URL}pause/",
        {"pool": "emails", "verb": "pause", "csrfmiddlewaretoken": token},
        follow=True,
    )
    assert "Pool 'emails' paused." in html.unescape(response.content.decode())
    assert PoolPause.objects.get(pool="emails").paused_by == "olga"
    assert 'value="resume">Resume<' in live_body(operator)
    operator.post(f"{LIVE_URL}pause/", {"pool": "emails", "verb": "resume"})
    assert not PoolPause.objects.exists()
    assert list(LogEntry.objects.values_list("change_message", flat=True).order_by("id")) == [
        "Paused pool emails from the admin.",
        "Resumed pool emails from the admin.",
    ]


def test_a_viewer_cannot_pause(viewer):
    assert "Pause</button>" not in live_body(viewer)
    assert viewer.post(f"{LIVE_URL}pause/", {"pool": "emails", "verb": "pause"}).status_code == 403
    assert not PoolPause.objects.exists()


def test_the_live_page_needs_a_login():
    response = Client().get(f"{LIVE_URL}live.json")
    assert response.status_code == 302


def test_the_live_page_shows_a_real_server_and_its_running_task(start_server, operator):
    # A short grace on stop: the sleeping task is not waited for at the end.
    server = start_server("--shutdown-timeout", "1", workers=2)
    running = tasks.sleep_seconds.offload(30)
    wait_until(lambda: status(running.id) == TaskStatus.RUNNING, message="the task to start")
    pid = Task.objects.get(pk=running.id).worker_pid
    text = wait_until(
        lambda: (
            (body := live_body(operator)) and f"{LIST_URL}{running.id}/change/" in body and body
        ),
        30,
        "the heartbeat that shows the running task",
    )
    assert f'data-server="{Server.objects.get(pid=server.pid).host}:{server.pid}"' in text
    assert re.search(rf"<td>{pid}</td><td>busy</td>", text)
    assert "tests.tasks.sleep_seconds" in text
    assert len(re.findall(r'class="leek-worker[ "]', text)) == 2


def test_a_pool_paused_from_the_live_page_stays_paused_across_a_restart(start_server, operator):
    first = start_server()
    operator.post(f"{LIVE_URL}pause/", {"pool": "emails", "verb": "pause"})
    held = tasks.in_email_pool.offload()
    other = tasks.add.offload(1, 1)
    wait_until(lambda: status(other.id) == TaskStatus.SUCCESSFUL, message="the default pool")
    first.stop()
    second = start_server()
    probe = tasks.add.offload(2, 2)
    wait_until(lambda: status(probe.id) == TaskStatus.SUCCESSFUL, message="the new server")
    assert status(held.id) == TaskStatus.READY
    assert "emails" in live_body(operator)
    operator.post(f"{LIVE_URL}pause/", {"pool": "emails", "verb": "resume"})
    wait_until(lambda: status(held.id) == TaskStatus.SUCCESSFUL, message="the resumed pool")
    assert second.proc.poll() is None
