"""A real browser on the admin: headless Chromium, driven by Selenium, against a real server.

Skipped when Chromium or its driver is missing (Debian: `apt-get install chromium
chromium-driver`; .ci/run installs them). LEEK_SCREENSHOT=docs/live-page.png saves the
screenshot of the live page there (the README shows it).
"""

import mimetypes
import os
import shutil
import tempfile
from pathlib import Path

import django.contrib.admin
import pytest
from django.contrib.auth.models import User
from django.test.testcases import LiveServerThread

from leek.models import Task, TaskStatus
from tests import tasks
from tests.conftest import wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra)")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromedriver"
)
ADMIN_STATIC = Path(django.contrib.admin.__file__).parent / "static"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


class AdminStatic:
    """Serve the admin's own CSS and JS under /static/, the rest to Django."""

    def __init__(self, application):
        self.application = application

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if not path.startswith("/static/"):
            return self.application(environ, start_response)
        file = (ADMIN_STATIC / path.removeprefix("/static/")).resolve()
        if ADMIN_STATIC not in file.parents or not file.is_file():
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        start_response("200 OK", [("Content-Type", kind)])
        return [file.read_bytes()]


@pytest.fixture
def live_server(settings):
    """Django's live server thread, on a free port, with the admin's static files."""
    settings.STATIC_URL = "/static/"
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    thread = LiveServerThread("127.0.0.1", AdminStatic, port=0)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait(30)
    if thread.error:
        raise thread.error
    yield f"http://127.0.0.1:{thread.port}"
    thread.terminate()


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="leek-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile}", "--window-size=1400,900"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def log_in(browser, base):
    from selenium.webdriver.common.by import By

    User.objects.filter(username="admin").delete()
    User.objects.create_superuser("admin", "admin@example.com", "a-password")
    browser.get(f"{base}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys("a-password")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_until(lambda: "Site administration" in browser.page_source, 30, "the admin index")


def texts(browser, css):
    """Return the text of each element `css` selects; None if the page redrew meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return [element.text for element in browser.find_elements(By.CSS_SELECTOR, css)]
    except StaleElementReferenceException:  # the live page redraws every 2 s
        return None


def test_the_live_page_shows_a_busy_pool_in_a_real_browser(
    start_server, live_server, browser, settings
):
    from selenium.webdriver.common.by import By

    server = start_server("--shutdown-timeout", "1", workers=2)
    done = [tasks.add.offload(n, n) for n in range(3)]
    wait_until(lambda: all(Task.objects.get(pk=h.id).status == "SUCCESSFUL" for h in done))
    # Five long tasks: two run, three wait. Which two run is the dispatcher's choice (a
    # worker may hold the next id ahead), so the page is checked against the RUNNING rows.
    for _ in range(5):
        tasks.sleep_seconds.offload(120)
    wait_until(
        lambda: Task.objects.filter(status=TaskStatus.RUNNING).count() == 2,
        message="both workers busy",
    )
    log_in(browser, live_server)
    browser.find_element(By.LINK_TEXT, "Servers").click()
    running = Task.objects.filter(status=TaskStatus.RUNNING)
    pids = list(running.values_list("worker_pid", flat=True))

    def shows_busy_workers():
        rows = texts(browser, "tr.leek-worker.leek-busy")
        text = " ".join(rows or ())
        return rows is not None and len(rows) == 2 and all(str(p) in text for p in pids) and text

    # The page redraws itself: the first heartbeat may come after the page was loaded.
    # Each look asks the browser through its driver: look every 0.25 s, not every 20 ms, so
    # that a loaded machine still has the time to serve and draw the page.
    text = wait_until(shows_busy_workers, 90, "two busy workers on the live page", 0.25)
    assert "tests.tasks.sleep_seconds" in text
    assert all(str(task_id) in text for task_id in running.values_list("id", flat=True))
    box = f'[data-server$=":{server.pid}"]'
    wait_until(lambda: "live" in " ".join(texts(browser, box) or ()), 60, "the server", 0.25)
    backlog = "default 3"
    wait_until(lambda: backlog in " ".join(texts(browser, "table.leek-backlog") or ()), 60)
    target = os.environ.get("LEEK_SCREENSHOT")
    if target:
        browser.set_window_size(1200, 760)
        wait_until(shows_busy_workers, 90, "the redrawn page", 0.25)
        browser.save_screenshot(target)


def test_the_task_list_does_not_scroll_sideways_at_1400_px(live_server, browser, settings):
    from django.conf import settings as django_settings
    from django.test import override_settings

    with override_settings(LEEK={**django_settings.LEEK, "eager": True}):
        tasks.echo_bytes.offload("a long argument " * 40)
        tasks.raise_value_error.offload(message="a long error message " * 20)
        tasks.add.offload(1, 2)
    log_in(browser, live_server)
    browser.set_window_size(1400, 900)
    browser.get(f"{live_server}/admin/leek/task/")
    wait_until(lambda: "tests.tasks.echo_bytes" in browser.page_source, 30, "the list")
    # Neither the page nor the table's own box (Django's admin lets it scroll) is wider than
    # what shows.
    for box in ("document.documentElement", "document.querySelector('#changelist .results')"):
        inner, scroll = browser.execute_script(f"return [{box}.clientWidth, {box}.scrollWidth]")
        assert scroll <= inner, f"{box} is {scroll} px wide in {inner} px, at 1,400 px"
