"""The admin pages of the task table: the list at a glance, filters, search, a task's page."""

import html
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from leek import adminlist
from leek.models import Task, TaskStatus
from tests import tasks

LIST_URL = "/admin/leek/task/"


@pytest.fixture(autouse=True)
def _clean_users():
    User.objects.all().delete()


@pytest.fixture
def admin_client():
    user = User.objects.create_superuser("admin", "admin@example.com", "pw")
    browser = Client()
    browser.force_login(user)
    return browser


@pytest.fixture
def eager_tasks():
    """One SUCCESSFUL and one FAILED task, run eagerly in this process."""
    from django.conf import settings

    with override_settings(LEEK={**settings.LEEK, "eager": True}):
        done = tasks.add.offload("marker-left-", "marker-right")
        failed = tasks.raise_value_error.offload(message="marker-broken")
    assert done.status == TaskStatus.SUCCESSFUL
    assert failed.status == TaskStatus.FAILED
    return done, failed


def page(browser, url, status=200):
    response = browser.get(url)
    assert response.status_code == status, response.content[:2000]
    return html.unescape(response.content.decode())


def results(browser, url):
    """Return the text of the list's table only (the filters also name callables)."""
    text = page(browser, url)
    found = re.search(r'<table id="result_list">.*?</table>', text, re.S)
    return found.group(0) if found else ""


def test_the_list_shows_each_call_as_python(admin_client, eager_tasks):
    text = results(admin_client, LIST_URL)
    assert "tests.tasks.add('marker-left-', 'marker-right')" in text
    assert "tests.tasks.raise_value_error(message='marker-broken')" in text


def test_the_list_shows_status_times_to_the_second_and_the_errors_last_line(
    admin_client, eager_tasks
):
    done, failed = eager_tasks
    text = results(admin_client, LIST_URL)
    assert 'class="leek-status leek-successful"' in text
    assert 'class="leek-status leek-failed"' in text
    enqueued = timezone.localtime(Task.objects.get(pk=done.id).enqueued_at)
    assert enqueued.strftime("%Y-%m-%d %H:%M:%S") in text
    assert "ValueError: marker-broken" in text
    # waited and ran, as durations
    assert re.search(r"\d+ ms|\d+\.\d s", text)


def test_a_long_call_is_cut_in_the_list_and_whole_on_its_page(admin_client):
    from django.conf import settings

    long_text = "x" * 300
    with override_settings(LEEK={**settings.LEEK, "eager": True}):
        handle = tasks.echo_bytes.offload(long_text)
    text = results(admin_client, LIST_URL)
    assert "tests.tasks.echo_bytes('xxxx" in text
    assert "…" in text
    assert f"tests.tasks.echo_bytes('{long_text}')" not in text.split('title="')[0]
    detail = page(admin_client, f"{LIST_URL}{handle.id}/change/")
    assert f"tests.tasks.echo_bytes('{long_text}')" in detail


def test_the_list_needs_a_login(eager_tasks):
    response = Client().get(LIST_URL)
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_the_list_filters_on_status(admin_client, eager_tasks):
    text = results(admin_client, LIST_URL + "?status__exact=FAILED")
    assert "tests.tasks.raise_value_error" in text
    assert "tests.tasks.add" not in text
    text = results(admin_client, LIST_URL + "?status__exact=SUCCESSFUL")
    assert "tests.tasks.add" in text
    assert "tests.tasks.raise_value_error" not in text


def test_the_list_filters_on_pool_and_callable(admin_client, eager_tasks):
    Task.objects.create(callable_path="tests.tasks.in_email_pool", pool="emails", payload=b"")
    whole = page(admin_client, LIST_URL)
    # The filters offer the values the table holds.
    assert "?pool=emails" in whole
    assert "?callable_path=tests.tasks.add" in whole
    text = results(admin_client, LIST_URL + "?pool=emails")
    assert "tests.tasks.in_email_pool" in text
    assert "tests.tasks.add" not in text
    text = results(admin_client, LIST_URL + "?callable_path=tests.tasks.add")
    assert "tests.tasks.add" in text
    assert "tests.tasks.raise_value_error" not in text
    assert "tests.tasks.in_email_pool" not in text


def test_the_list_filters_on_the_enqueued_date(admin_client, eager_tasks):
    old = timezone.now() - timedelta(days=60)
    Task.objects.create(callable_path="tests.tasks.old_one", payload=b"", enqueued_at=old)
    # The filter's own "Today" link.
    whole = page(admin_client, LIST_URL)
    today = re.search(r'href="(\?enqueued_at__gte=[^"]+)"[^>]*>Today<', whole).group(1)
    text = results(admin_client, LIST_URL + today)
    assert "tests.tasks.add" in text
    assert "tests.tasks.old_one" not in text
    assert "tests.tasks.old_one" in results(admin_client, LIST_URL)


def test_the_list_searches_the_callable_path_and_the_id(admin_client, eager_tasks):
    done, failed = eager_tasks
    text = results(admin_client, LIST_URL + "?q=add")
    assert "tests.tasks.add" in text
    assert "tests.tasks.raise_value_error" not in text
    text = results(admin_client, LIST_URL + "?q=value_error")
    assert "tests.tasks.raise_value_error" in text
    assert "tests.tasks.add" not in text
    text = results(admin_client, LIST_URL + f"?q={failed.id}")
    assert "tests.tasks.raise_value_error" in text
    assert "tests.tasks.add" not in text


def test_the_list_does_not_count_the_whole_table(admin_client, eager_tasks, monkeypatch):
    monkeypatch.setattr(adminlist, "EXACT_COUNT_UP_TO", 1)
    with CaptureQueriesContext(connection) as queries:
        text = page(admin_client, LIST_URL)
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts
    unbounded = [sql for sql in counts if "LIMIT" not in sql.upper()]
    if connection.vendor == "postgresql":
        # Past the bound, the planner's estimate: never COUNT(*) over every row.
        assert not unbounded, unbounded
        assert "about " in text
    else:
        # SQLite has no estimate; it counts (quickly: see benchmarks/admin_list.py).
        assert len(unbounded) == 1


def test_distinct_values_lists_each_value_once_in_order():
    for pool in ["b", "a", "b", "c", "a"]:
        Task.objects.create(callable_path="x.y", pool=pool, payload=b"")
    assert adminlist.distinct_values(Task.objects.all(), "pool") == ["a", "b", "c"]
    assert adminlist.distinct_values(Task.objects.all(), "pool", limit=2) == ["a", "b"]
    assert adminlist.distinct_values(Task.objects.none(), "pool") == []


def test_the_page_of_a_successful_task_shows_the_call_and_the_result(admin_client, eager_tasks):
    done, _ = eager_tasks
    text = page(admin_client, f"{LIST_URL}{done.id}/change/")
    assert "tests.tasks.add('marker-left-', 'marker-right')" in text
    assert "'marker-left-marker-right'" in text
    # Read-only: no save button.
    assert 'name="_save"' not in text


def test_the_page_of_a_failed_task_puts_status_call_and_error_first(admin_client, eager_tasks):
    _, failed = eager_tasks
    text = page(admin_client, f"{LIST_URL}{failed.id}/change/")
    places = [
        text.index("leek-status leek-failed"),
        text.index("tests.tasks.raise_value_error(message='marker-broken')"),
        text.index("ValueError: marker-broken"),
        text.index("Traceback (most recent call last)"),
        text.index("Attempts"),
        text.index("Timing"),
        text.index("Options"),
    ]
    assert places == sorted(places)


def test_the_traceback_keeps_its_indentation_in_a_monospaced_block(admin_client, eager_tasks):
    _, failed = eager_tasks
    text = page(admin_client, f"{LIST_URL}{failed.id}/change/")
    block = re.search(r'<pre class="leek-traceback">(.*?)</pre>', text, re.S).group(1)
    assert block.startswith("Traceback (most recent call last):\n  File ")
    assert re.search(r"\n    raise ValueError\(message\)\n", block)


def test_the_page_lists_every_attempt_with_its_worker_and_error(admin_client):
    started = timezone.now() - timedelta(seconds=30)
    row = Task.objects.create(
        callable_path="tests.tasks.always_fail",
        payload=b"",
        status=TaskStatus.FAILED,
        attempts=2,
        started_at=started + timedelta(seconds=10),
        finished_at=started + timedelta(seconds=11),
        worker_host="web-2",
        worker_pid=4242,
        exception_class_path="builtins.RuntimeError",
        traceback="Traceback (most recent call last):\nRuntimeError: second-marker",
        history=[
            {
                "started_at": started.isoformat(),
                "finished_at": (started + timedelta(seconds=1)).isoformat(),
                "worker": "web-1:1717",
                "exception_class_path": "builtins.RuntimeError",
                "traceback": "Traceback (most recent call last):\nRuntimeError: first-marker",
            }
        ],
    )
    text = page(admin_client, f"{LIST_URL}{row.pk}/change/")
    table = re.search(r'<table class="leek-attempts">.*?</table>', text, re.S).group(0)
    assert table.index("web-1:1717") < table.index("first-marker")
    assert table.index("first-marker") < table.index("web-2:4242")
    assert table.index("web-2:4242") < table.index("second-marker")
    local = timezone.localtime(started).strftime("%Y-%m-%d %H:%M:%S")
    assert local in table


def test_a_damaged_pickle_is_shown_not_raised(admin_client):
    row = Task.objects.create(callable_path="tests.tasks.add", payload=b"\x80\x05not a pickle")
    text = page(admin_client, f"{LIST_URL}{row.pk}/change/")
    assert "cannot be read" in text
    assert "cannot be read" in results(admin_client, LIST_URL)


def test_a_json_payload_reads_as_a_call(admin_client):
    payload = b'{"args": [1, "two"], "kwargs": {"three": 3}}'
    Task.objects.create(callable_path="app.tasks.jsonic", payload=payload)
    assert "app.tasks.jsonic(1, 'two', three=3)" in results(admin_client, LIST_URL)


def test_tasks_cannot_be_added_or_changed(admin_client, eager_tasks):
    done, _ = eager_tasks
    page(admin_client, LIST_URL + "add/", status=403)
    response = admin_client.post(f"{LIST_URL}{done.id}/change/", {"status": "READY"})
    assert response.status_code == 403
    assert Task.objects.get(pk=done.id).status == TaskStatus.SUCCESSFUL


def test_the_list_offers_no_add_button(admin_client, eager_tasks):
    text = page(admin_client, LIST_URL)
    assert LIST_URL + "add/" not in text
