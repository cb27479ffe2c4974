"""Start a real `python -m django leek` server, wait until it is ready, and stop it by pid.

Runs in the benchmark process. Each server is a subprocess in a session of its own, on the
throwaway project (project.py) and a port of its own; it is ready when it has printed its
banner, answers `ping` and reports every worker idle. Stopping sends SIGTERM, then kills by
pid the server and every descendant it was ever seen to have: never by name.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from common import BenchError, progress
from project import REPO_ROOT, SETTINGS_MODULE

BANNER = re.compile(rb"leek serving .* on ([\d.]+):(\d+) with (\d+) worker")


@dataclass
class Server:
    """A `python -m django leek` subprocess and every pid seen under it."""

    proc: subprocess.Popen
    port: int
    workers: int
    log: Path
    seen: set[int] = field(default_factory=set)
    banner: bytes = b""

    def ask(self, line: bytes, timeout: float = 2.0) -> bytes:
        """Send one line to the server and return its one-line reply."""
        from leek import client

        return client.request("127.0.0.1", self.port, line, timeout)

    def stats(self) -> dict[str, Any]:
        """Return the server's `stats` object."""
        from leek import wire

        reply = self.ask(wire.STATS)
        try:
            return wire.parse_stats(reply.strip())
        except ValueError as exc:  # WireError, or a reply that is not JSON
            raise BenchError(f"unexpected reply to stats: {reply[:80]!r}") from exc

    def worker_pids(self) -> list[int]:
        """Return the pids of the workers, as the server reports them."""
        return [w["pid"] for w in self.stats()["workers"]]

    def remember_children(self) -> None:
        """Note every descendant of the server, so that stop() can kill what outlives it."""
        with suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen.add(child.pid)

    def log_tail(self) -> str:
        """Return the end of the server's stderr."""
        with suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return ""


def start_server(root: Path, port: int, workers: int, busy: bool = False) -> Server:
    """Start the server with `workers` workers and wait until they are all idle (or busy)."""
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    paths = [str(root), str(REPO_ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    log = root / f"server-{port}-{workers}.log"
    command = [sys.executable, "-m", "django", "leek", "--workers", str(workers)]
    # It serves the default pool only: the offload figures go to a pool nobody serves.
    command += ["--bind", f"127.0.0.1:{port}", "--pool", "default", "-v", "0"]
    with log.open("wb") as err:
        proc = subprocess.Popen(
            command,
            env=env,
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
    server = Server(proc, port, workers, log)
    try:
        wait_ready(server, busy=busy)
    except BaseException:
        stop_server(server)
        raise
    return server


def read_banner(server: Server, deadline: float) -> None:
    """Read the banner from the server's stdout and check its port and worker count."""
    found: list[bytes] = []
    reader = threading.Thread(
        target=lambda: found.append(server.proc.stdout.readline()), daemon=True
    )
    reader.start()
    reader.join(max(0.0, deadline - time.monotonic()))
    if not found or not found[0]:
        raise BenchError(f"server printed no banner; its log:\n{server.log_tail()}")
    server.banner = found[0].strip()
    match = BANNER.search(server.banner)
    if not match or int(match[2]) != server.port or int(match[3]) != server.workers:
        raise BenchError(f"unexpected banner {server.banner!r}")


def wait_ready(server: Server, timeout: float = 60.0, busy: bool = False) -> None:
    """Wait for the banner, a `pong`, and `stats` showing every worker idle (or `busy`)."""
    deadline = time.monotonic() + timeout
    read_banner(server, deadline)
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(f"server exited with {server.proc.returncode}:\n{server.log_tail()}")
        server.remember_children()
        try:
            if server.ask(b"ping\n") == b"pong\n":
                states = [w["state"] for w in server.stats()["workers"]]
                booted = ("idle", "busy") if busy else ("idle",)
                if sum(state in booted for state in states) == server.workers:
                    server.remember_children()
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise BenchError(f"server not ready after {timeout} s:\n{server.log_tail()}")


def stop_server(server: Server) -> None:
    """Stop the server: SIGTERM, wait, then SIGKILL it and every child it ever had."""
    server.remember_children()
    proc = server.proc
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            progress(f"server {proc.pid} ignored SIGTERM for 20 s; killing it")
            with suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    for pid in sorted(server.seen):
        with suppress(psutil.Error):
            child = psutil.Process(pid)
            child.kill()
            child.wait(timeout=5)
    if proc.stdout is not None:
        proc.stdout.close()
