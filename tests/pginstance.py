"""A PostgreSQL instance of a test's own, to stop and start at will.

The machine's cluster serves every test run at once: a test that restarts the database makes
its own (initdb in a temporary directory, a free port, a socket directory of its own), run as
the `postgres` user when the tests run as root, and removes it at the end.
"""

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _bin_dir():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgInstance:
    """initdb, pg_ctl start / stop; `env` points a leek server at it (tests/settings.py)."""

    def __init__(self):
        self.bin = _bin_dir()
        if self.bin is None:
            pytest.skip("needs PostgreSQL's initdb and pg_ctl")
        self.dir = Path(tempfile.mkdtemp(prefix="leek-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.env = {"LEEK_TEST_PGHOST": "127.0.0.1", "LEEK_TEST_PGPORT": str(self.port)}
        # Root may not run PostgreSQL: its own user does, in a directory it owns.
        self.as_user = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.dir, "postgres", "postgres")
        # fsync off: a clean stop writes everything all the same, and this one lives seconds.
        self.options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c max_connections=50"
        )

    def _run(self, tool, *args):
        command = [*self.as_user, str(self.bin / tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode:
            pytest.fail(f"{tool} {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")

    def init(self):
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def start(self):
        log = str(self.dir / "log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", self.options, "-w", "start")

    def stop(self, mode="fast"):
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def execute(self, sql):
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql)

    def close(self):
        """Stop the instance if it runs, and remove its directory."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError, pytest.fail.Exception):
                self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
