"""What every module of the throughput benchmark shares: its sizes, its two errors, progress.

Runs in the benchmark process (`python benchmarks/throughput.py` or `benchmarks/servers.py`).
Progress goes to stderr, so that stdout holds the report alone.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass


class VerificationError(Exception):
    """A task was lost, ran twice, or a row is missing or doubled."""


class BenchError(Exception):
    """The benchmark could not run (server did not start, database unreachable)."""


def progress(message: str) -> None:
    """Write a progress line on stderr."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    tasks: int
    samples: int
    inserts: int
    queue_items: int
    tcp_samples: int
    backlog: int = 0
    backlog_seconds: float = 10.0
