"""The example project: its admin login and its page's links to the control room."""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

MANAGE = ROOT / "test_app" / "manage.py"


@pytest.fixture
def example(tmp_path):
    """Run `test_app/manage.py` commands on a database of the test's own."""
    env = {**os.environ, "LEEK_EXAMPLE_DB": str(tmp_path / "example.sqlite3")}
    env.pop("DJANGO_SETTINGS_MODULE", None)

    def run(*args):
        done = subprocess.run(
            [sys.executable, str(MANAGE), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    run("migrate", "--verbosity", "0")
    run.env = env
    return run


def test_demo_admin_makes_a_login_with_a_new_password_each_run(example):
    first = re.search(r"user admin, password (\S+)", example("demo_admin")).group(1)
    second = re.search(r"user admin, password (\S+)", example("demo_admin")).group(1)
    assert first != second
    check = (
        "from django.contrib.auth import authenticate as a; "
        f"print(a(username='admin', password='{first}') is None, "
        f"a(username='admin', password='{second}').is_superuser)"
    )
    assert example("shell", "-c", check).splitlines()[-1].split() == ["True", "True"]


def test_the_page_leads_to_the_control_room_and_starts_nothing(example):
    show = (
        "from django.test import Client; "
        "print(Client().get('/', HTTP_HOST='127.0.0.1').content.decode())"
    )
    page = example("shell", "-c", show)
    assert 'href="/admin/leek/server/"' in page
    assert 'href="/admin/leek/task/"' in page
    assert 'href="/leek/metrics"' in page
    # demo.sh started the server: the page does not send the visitor to start one.
    assert not re.search(r"manage\.py leek( --workers|</code>)", page)
    assert "createsuperuser" not in page


def test_the_commands_the_page_shows_work_as_written(example):
    show = (
        "from django.test import Client; "
        "print(Client().get('/', HTTP_HOST='127.0.0.1').content.decode())"
    )
    page = example("shell", "-c", show)
    commands = re.findall(r"<code>(\.venv/bin/python [^<]+)</code>", page)
    assert commands == [".venv/bin/python test_app/manage.py leek status"]
    # From the checkout, with the README's venv (this interpreter).
    argv = [sys.executable, *commands[0].split()[1:]]
    env = {**example.env, "PYTHONPATH": ""}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    # No server is up here: exit 1 and one line saying so (not a usage error).
    assert done.returncode == 1, done.stderr
    assert "no live leek server" in done.stderr
