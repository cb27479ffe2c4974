"""The admin pages of the task table: read-only, the pickles shown as text."""

import html

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings

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
        failed = tasks.raise_value_error.offload("marker-broken")
    assert done.status == TaskStatus.SUCCESSFUL
    assert failed.status == TaskStatus.FAILED
    return done, failed


def page(browser, url, status=200):
    response = browser.get(url)
    assert response.status_code == status, response.content[:2000]
    return html.unescape(response.content.decode())


def test_the_list_shows_the_tasks(admin_client, eager_tasks):
    text = page(admin_client, LIST_URL)
    assert "tests.tasks.add" in text
    assert "tests.tasks.raise_value_error" in text


def test_the_list_needs_a_login(eager_tasks):
    response = Client().get(LIST_URL)
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_the_list_filters_on_status(admin_client, eager_tasks):
    text = page(admin_client, LIST_URL + "?status__exact=FAILED")
    assert "tests.tasks.raise_value_error" in text
    assert "tests.tasks.add" not in text
    text = page(admin_client, LIST_URL + "?status__exact=SUCCESSFUL")
    assert "tests.tasks.add" in text
    assert "tests.tasks.raise_value_error" not in text


def test_the_list_searches_the_callable_path(admin_client, eager_tasks):
    text = page(admin_client, LIST_URL + "?q=add")
    assert "tests.tasks.add" in text
    assert "tests.tasks.raise_value_error" not in text
    text = page(admin_client, LIST_URL + "?q=value_error")
    assert "tests.tasks.raise_value_error" in text
    assert "tests.tasks.add" not in text


def test_the_page_of_a_successful_task_shows_the_call_and_the_result(admin_client, eager_tasks):
    done, _ = eager_tasks
    text = page(admin_client, f"{LIST_URL}{done.id}/change/")
    # The call, read from the pickle without unpickling it.
    assert "'tests.tasks'" in text
    assert "'add'" in text
    assert "'marker-left-'" in text
    assert "'marker-right'" in text
    # The return value likewise.
    assert "'marker-left-marker-right'" in text
    # Read-only: no save button.
    assert 'name="_save"' not in text


def test_the_page_of_a_failed_task_shows_the_traceback(admin_client, eager_tasks):
    _, failed = eager_tasks
    text = page(admin_client, f"{LIST_URL}{failed.id}/change/")
    assert "'raise_value_error'" in text
    assert "Traceback (most recent call last)" in text
    assert "ValueError: marker-broken" in text
    assert "builtins.ValueError" in text


def test_a_damaged_pickle_is_shown_not_raised(admin_client):
    row = Task.objects.create(callable_path="tests.tasks.add", payload=b"\x80\x05not a pickle")
    text = page(admin_client, f"{LIST_URL}{row.pk}/change/")
    assert "cannot be read" in text


def test_tasks_cannot_be_added_or_changed(admin_client, eager_tasks):
    done, _ = eager_tasks
    page(admin_client, LIST_URL + "add/", status=403)
    response = admin_client.post(f"{LIST_URL}{done.id}/change/", {"status": "READY"})
    assert response.status_code == 403
    assert Task.objects.get(pk=done.id).status == TaskStatus.SUCCESSFUL


def test_the_list_offers_no_add_button(admin_client, eager_tasks):
    text = page(admin_client, LIST_URL)
    assert LIST_URL + "add/" not in text
