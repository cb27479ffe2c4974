"""Test set-up: a database of this run's own, Django, and real leek servers to test against.

LEEK_TEST_DB=sqlite (default), postgres or mariadb picks the engine. Each run makes its own
SQLite file or PostgreSQL or MariaDB database (and drops it at the end), so that runs can
share a machine.
"""

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
KIND = os.environ.get("LEEK_TEST_DB", "sqlite")
_TMP = Path(tempfile.mkdtemp(prefix="leek-tests-"))

os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
if KIND in ("postgres", "mariadb"):
    os.environ["LEEK_TEST_DB_NAME"] = f"leek_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
else:
    os.environ["LEEK_TEST_DB_NAME"] = str(_TMP / "db.sqlite3")
DB_NAME = os.environ["LEEK_TEST_DB_NAME"]


def _pg_admin(sql):
    import psycopg

    with psycopg.connect(
        host=os.environ.get("LEEK_TEST_PGHOST", "127.0.0.1"),
        port=os.environ.get("LEEK_TEST_PGPORT", "5432"),
        user=os.environ.get("LEEK_TEST_PGUSER", "postgres"),
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(sql)


def _mariadb_admin(sql):
    import MySQLdb

    conn = MySQLdb.connect(
        host=os.environ.get("LEEK_TEST_MYHOST", "127.0.0.1"),
        port=int(os.environ.get("LEEK_TEST_MYPORT", "3306")),
        user=os.environ.get("LEEK_TEST_MYUSER", "root"),
    )
    try:
        conn.cursor().execute(sql)
    finally:
        conn.close()


def pytest_configure(config):
    import django
    from django.core.management import call_command

    if KIND == "postgres":
        _pg_admin(f'CREATE DATABASE "{DB_NAME}"')
    elif KIND == "mariadb":
        _mariadb_admin(f"CREATE DATABASE `{DB_NAME}` CHARACTER SET utf8mb4")
    django.setup()
    call_command("migrate", verbosity=0)


def pytest_unconfigure(config):
    from django.db import connections

    connections.close_all()
    # The SQLite database, its turn lock and the servers' logs: a run leaves nothing behind.
    if KIND == "sqlite":
        from leek import hotpath

        with contextlib.suppress(OSError):
            os.unlink(hotpath.turn_lock_path(DB_NAME))
    shutil.rmtree(_TMP, ignore_errors=True)
    if KIND == "postgres":
        _pg_admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    elif KIND == "mariadb":
        _mariadb_admin(f"DROP DATABASE IF EXISTS `{DB_NAME}`")


def pytest_report_header(config):
    return f"leek tests on {KIND}: {DB_NAME}"


requires_postgres = pytest.mark.skipif(KIND != "postgres", reason="needs LEEK_TEST_DB=postgres")
requires_server_db = pytest.mark.skipif(
    KIND == "sqlite", reason="needs a database server (LEEK_TEST_DB=postgres or mariadb)"
)


@pytest.fixture(autouse=True)
def clean_tables():
    """Start every test with empty tables."""
    from leek.models import PoolPause, Schedule, Server, Task, TaskLimit
    from tests.models import Row

    Schedule.objects.all().delete()  # and their slots
    Task.objects.all().delete()
    TaskLimit.objects.all().delete()
    Row.objects.all().delete()
    Server.objects.all().delete()
    PoolPause.objects.all().delete()
    return


def wait_until(predicate, timeout=30.0, message="condition", interval=0.02):
    """Wait for predicate() to be true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def holds_for(predicate, seconds, interval=0.05):
    """Return whether predicate() stays true for `seconds` (to see that nothing happens)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(interval)
    return bool(predicate())


@contextlib.contextmanager
def this_process_on(**changes):
    """Point this process's default connection elsewhere (NAME, HOST, PORT), and migrate it.

    For a test with a database of its own (one it restarts, or fills); undone at the end.
    """
    from django.core.management import call_command
    from django.db import connection

    saved = {key: connection.settings_dict[key] for key in changes}
    connection.close()
    connection.settings_dict.update(changes)
    try:
        call_command("migrate", verbosity=0)
        yield
    finally:
        connection.close()
        connection.settings_dict.update(saved)


class LeekServer:
    """A real `manage.py leek` process in its own session, and its workers."""

    def __init__(self, args, env_extra=None, expect_start=True, wrap=()):
        self.log_path = _TMP / f"server-{uuid.uuid4().hex[:8]}.log"
        self.port = None
        # Where and how this test process asks the server for `ping` and `stats`.
        self.host = "127.0.0.1"
        self.secret = ""
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
        # `wrap`: a command that runs the server, as `ip netns exec NAME` (it must exec it).
        self.args = [*wrap, sys.executable, "-m", "django", "leek", *args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.args,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.known_pids = {self.proc.pid}
        if expect_start:
            self._wait_started()

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        return self.log_path.read_text(errors="replace")

    def _wait_started(self):
        def banner():
            if self.proc.poll() is not None:
                pytest.fail(f"leek server exited with {self.proc.returncode}:\n{self.log()}")
            found = re.search(r"leek serving .* on [\d.]+:(\d+)", self.log())
            return found and int(found.group(1))

        self.port = wait_until(banner, 60, "the server's banner")

    def request(self, line, timeout=10.0):
        """Send one line and return the reply line."""
        from leek import client

        return client.request(self.host, self.port, line, timeout, self.secret)

    def stats(self):
        from leek import wire

        return wire.parse_stats(self.request(wire.STATS).strip())

    def worker_pids(self):
        pids = []
        with contextlib.suppress(psutil.Error):
            pids = [c.pid for c in psutil.Process(self.pid).children(recursive=True)]
        self.known_pids.update(pids)
        return pids

    def wait_workers(self, count, timeout=60):
        """Wait until `count` workers have booted and are idle or busy."""

        def booted():
            workers = self.stats()["workers"]
            up = [w for w in workers if w["state"] in ("idle", "busy")]
            return len(up) >= count and up

        workers = wait_until(booted, timeout, f"{count} booted workers")
        self.worker_pids()
        return workers

    def signal(self, signum):
        os.kill(self.pid, signum)

    def wait_exit(self, timeout=60):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"leek server did not exit within {timeout} s:\n{self.log()}")

    def stop(self):
        """Stop the server and every process it started, by pid."""
        self.worker_pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pid in self.known_pids:
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                if process.status() == psutil.STATUS_ZOMBIE:
                    continue  # dead already; its new parent (init) reaps it
                process.kill()
                # Dead is enough: a zombie is init's to reap, which can take seconds.
                deadline = time.monotonic() + 10
                while process.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
                    time.sleep(0.02)


@pytest.fixture
def start_server(settings):
    """Return a function that starts a leek server and points this process's client at it."""
    servers = []

    def start(*args, workers=1, env=None, point_client=True, expect_start=True, wrap=()):
        argv = ["--workers", str(workers), *args]
        if not any(a.startswith("--bind") for a in args) and "--burst" not in args:
            argv += ["--bind", "127.0.0.1:0"]
        server = LeekServer(argv, env, expect_start=expect_start, wrap=wrap)
        servers.append(server)
        if point_client and server.port:
            settings.LEEK = {**settings.LEEK, "port": server.port}
        if expect_start and server.port:
            server.wait_workers(workers)
        return server

    yield start
    for server in servers:
        server.stop()


def ip(*args, netns=None):
    command = ["ip", *(["netns", "exec", netns, "ip"] if netns else []), *args]
    subprocess.run(command, check=True, capture_output=True, timeout=30)


@pytest.fixture
def netns():
    """A network namespace joined to this one by a veth pair: 10.a.b.1 here, .2 there."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to make a network namespace")
    tag = uuid.uuid4().hex[:6]
    name, here, there = f"leek-{tag}", f"lk{tag}a", f"lk{tag}b"
    subnet = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
    try:
        ip("netns", "add", name)
        ip("link", "add", here, "type", "veth", "peer", "name", there)
        ip("link", "set", there, "netns", name)
        ip("addr", "add", f"{subnet}.1/30", "dev", here)
        ip("link", "set", here, "up")
        ip("addr", "add", f"{subnet}.2/30", "dev", there, netns=name)
        ip("link", "set", there, "up", netns=name)
    except subprocess.CalledProcessError as exc:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", here], capture_output=True, timeout=30)
        pytest.skip(f"cannot make a network namespace here: {exc.stderr.decode().strip()}")
    try:
        yield SimpleNamespace(
            name=name, host_address=f"{subnet}.1", guest_address=f"{subnet}.2", host_link=here
        )
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(["ip", "link", "del", here], capture_output=True, timeout=30)


class _Settings:
    """Django settings whose assignments go through override_settings (and its signal)."""

    def __init__(self):
        object.__setattr__(self, "_overrides", [])

    def __getattr__(self, name):
        from django.conf import settings as django_settings

        return getattr(django_settings, name)

    def __setattr__(self, name, value):
        from django.test import override_settings

        override = override_settings(**{name: value})
        override.enable()
        self._overrides.append(override)

    def undo(self):
        while self._overrides:
            self._overrides.pop().disable()


@pytest.fixture
def settings():
    """Django settings that tests may change; every change is undone afterwards."""
    changed = _Settings()
    yield changed
    changed.undo()
