"""The metrics view: who may read it, and what Prometheus's own parser finds in it."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from leek import conf, control
from leek.models import Server, Task, TaskStatus

URL = "/leek/metrics"
TOKEN = "a-metrics-token-of-some-length"


@pytest.fixture(autouse=True)
def _clean_users():
    User.objects.all().delete()


@pytest.fixture
def staff():
    user = User.objects.create_user("ops", password="pw", is_staff=True)
    browser = Client()
    browser.force_login(user)
    return browser


def scrape(browser, **headers):
    response = browser.get(URL, **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(response.content.decode())}


def value(family, **labels):
    found = [
        s.value for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (labels, family.samples)
    return found[0]


def task(status, pool="default", path="tests.tasks.add", **fields):
    return Task.objects.create(callable_path=path, payload=b"", status=status, pool=pool, **fields)


def test_anonymous_and_non_staff_users_are_refused():
    assert Client().get(URL).status_code == 403
    User.objects.create_user("someone", password="pw")
    browser = Client()
    browser.login(username="someone", password="pw")
    assert browser.get(URL).status_code == 403


def test_a_bearer_token_lets_a_scraper_in(settings):
    assert Client().get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 403
    settings.LEEK = {**settings.LEEK, "metrics_token": TOKEN}
    scrape(Client(), HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert Client().get(URL, HTTP_AUTHORIZATION="Bearer wrong-token").status_code == 403
    assert Client().get(URL).status_code == 403


def test_a_short_token_is_refused_with_the_fix():
    with pytest.raises(ImproperlyConfigured, match="at least 16 characters.*token_urlsafe"):
        conf.from_mapping({"metrics_token": "short"})


def test_tasks_by_status_and_pool_and_the_backlog(staff):
    now = timezone.now()
    for _ in range(3):
        task(TaskStatus.READY, run_after=now - timedelta(seconds=120))
    task(TaskStatus.READY, pool="emails", run_after=now + timedelta(hours=1))
    task(TaskStatus.FAILED, pool="emails")
    control.pause("emails", "ops")
    families = scrape(staff)
    tasks = families["leek_tasks"]
    assert tasks.type == "gauge"
    assert value(tasks, status="READY", pool="default") == 3
    assert value(tasks, status="READY", pool="emails") == 1
    assert value(tasks, status="FAILED", pool="emails") == 1
    assert value(families["leek_ready_tasks"], pool="default") == 3
    age = value(families["leek_oldest_ready_age_seconds"], pool="default")
    assert 119 <= age < 600
    # Nothing of emails is due yet.
    assert value(families["leek_oldest_ready_age_seconds"], pool="emails") == 0
    assert value(families["leek_pool_paused"], pool="emails") == 1


def test_run_times_form_a_histogram_per_callable(staff):
    start = timezone.now() - timedelta(minutes=5)
    for seconds in (0.02, 0.3, 0.3, 7):
        task(
            TaskStatus.SUCCESSFUL,
            path="tests.tasks.sleep_seconds",
            started_at=start,
            finished_at=start + timedelta(seconds=seconds),
        )
    task(TaskStatus.RUNNING, path="tests.tasks.sleep_seconds", started_at=start)
    histogram = scrape(staff)["leek_task_run_seconds"]
    assert histogram.type == "histogram"
    path = "tests.tasks.sleep_seconds"
    assert value(histogram, callable=path, le="0.025") == 1
    assert value(histogram, callable=path, le="0.5") == 3
    assert value(histogram, callable=path, le="5.0") == 3
    assert value(histogram, callable=path, le="10.0") == 4
    assert value(histogram, callable=path, le="+Inf") == 4
    count = [s for s in histogram.samples if s.name == "leek_task_run_seconds_count"]
    total = [s for s in histogram.samples if s.name == "leek_task_run_seconds_sum"]
    assert count[0].value == 4
    assert total[0].value == pytest.approx(7.62)


def test_servers_workers_and_restarts_from_the_servers_rows(staff):
    now = timezone.now()
    Server.objects.create(
        host="web-1",
        pid=100,
        address="127.0.0.1:8002",
        heartbeat_at=now,
        workers=[
            {"pid": 101, "state": "busy", "task": 7},
            {"pid": 102, "state": "idle"},
            {"pid": 103, "state": "idle"},
        ],
        counts={"done": 12, "failed": 1},
        restarts={"crash": 2, "memory": 0},
    )
    Server.objects.create(host="web-2", pid=200, heartbeat_at=now - timedelta(hours=1))
    families = scrape(staff)
    assert value(families["leek_servers"], state="live") == 1
    assert value(families["leek_servers"], state="stale") == 1
    workers = families["leek_workers"]
    assert value(workers, server="web-1:100", state="busy") == 1
    assert value(workers, server="web-1:100", state="idle") == 2
    restarts = families["leek_worker_restarts"]
    assert restarts.type == "counter"
    assert value(restarts, server="web-1:100", cause="crash") == 2
    finished = families["leek_server_tasks"]
    assert value(finished, server="web-1:100", outcome="done") == 12
    assert value(families["leek_server_heartbeat_age_seconds"], server="web-2:200") > 3000


def test_label_values_are_escaped(staff):
    task(TaskStatus.READY, pool='we"ird\\pool')
    families = scrape(staff)
    assert value(families["leek_tasks"], status="READY", pool='we"ird\\pool') == 1


def test_a_real_server_shows_in_the_metrics(start_server, staff):
    from tests import tasks
    from tests.conftest import wait_until

    server = start_server("--shutdown-timeout", "1", workers=2)
    handle = tasks.sleep_seconds.offload(30)
    name = f"{Server.objects.get(pid=server.pid).host}:{server.pid}"

    def busy():
        families = scrape(staff)
        workers = [s for s in families["leek_workers"].samples if s.labels["server"] == name]
        states = {s.labels["state"]: s.value for s in workers}
        return states.get("busy") == 1 and states.get("idle") == 1 and families

    families = wait_until(busy, 30, "a busy and an idle worker in the metrics")
    assert value(families["leek_servers"], state="live") == 1
    assert value(families["leek_tasks"], status="RUNNING", pool="default") == 1
    assert value(families["leek_worker_restarts"], server=name, cause="crash") == 0
    assert Task.objects.get(pk=handle.id).status == TaskStatus.RUNNING
