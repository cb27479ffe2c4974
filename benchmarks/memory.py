"""Sample the resident memory of a leek server and its workers, idle and at peak.

Runs in the benchmark process: `MemorySampler` reads each pid's RSS through psutil, once on
demand (`sample`) or every MEMORY_INTERVAL in a thread of its own while a batch runs.
"""

from __future__ import annotations

import threading

import psutil
from live_server import Server

MEMORY_INTERVAL = 0.050  # seconds between two RSS samples
MB = 2**20


class MemorySampler:
    """Sample the RSS of the server and its workers every MEMORY_INTERVAL in a thread."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.pids = [server.proc.pid, *server.worker_pids()]
        self.peak: dict[int, int] = dict.fromkeys(self.pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[int, int]:
        """Return the RSS of each pid now (0 for one that is gone)."""
        now = {}
        for pid in self.pids:
            try:
                now[pid] = psutil.Process(pid).memory_info().rss
            except psutil.Error:
                now[pid] = 0
        return now

    def _run(self) -> None:
        while not self._stop.wait(MEMORY_INTERVAL):
            for pid, rss in self.sample().items():
                self.peak[pid] = max(self.peak[pid], rss)

    def __enter__(self) -> MemorySampler:
        """Start sampling."""
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join()
        self.server.remember_children()


def memory_figures(server_pid: int, idle: dict[int, int], peak: dict[int, int]) -> dict:
    """Return server and worker RSS in MB, idle and at peak."""
    workers = [pid for pid in idle if pid != server_pid]
    return {
        "server_idle_mb": round(idle[server_pid] / MB, 1),
        "server_peak_mb": round(peak[server_pid] / MB, 1),
        "workers_idle_mb": [round(idle[p] / MB, 1) for p in workers],
        "workers_peak_mb": [round(peak[p] / MB, 1) for p in workers],
    }
