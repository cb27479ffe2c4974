"""What the supervisor does about workers that die while they boot: back off, then give up.

Used by the supervisor in the server process. A worker that dies before it says Booted
(settings that do not import, a database that refuses it) is replaced after a delay that
doubles each time. After MAX_BOOT_FAILURES in a row the server stops, unless an older
generation still serves (new code loaded by SIGHUP that cannot boot): that one stays.
"""

from __future__ import annotations

import logging
import signal
import time

logger = logging.getLogger("leek.pool")

# Boot failures in a row before the server gives up, and the first backoff delay.
MAX_BOOT_FAILURES = 5
BOOT_BACKOFF = 0.5


# Signals a process gets from its own code (a broken C extension), not from outside.
_CRASH_SIGNALS = frozenset(
    (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT, signal.SIGSYS)
)


def is_boot_failure(exitcode: int | None) -> bool:
    """Tell whether a worker that died before Booted failed by itself.

    It did when it exited with an error code (leek.pool.worker.WORKER_BOOT_ERROR, or a
    failure of multiprocessing's own start-up) or crashed on a signal of its own making. A
    worker killed from outside while it booted (kill -9, the OOM killer) did not: it is
    replaced like any crashed worker, without counting towards giving up (issue 13).
    """
    if exitcode is None:
        return False
    if exitcode < 0:
        return -exitcode in _CRASH_SIGNALS
    return exitcode > 0


class PoolFailed(RuntimeError):
    """Workers keep dying while they boot; the server must stop."""


class BootGuard:
    """Counts boot failures in a row and says when the next worker may be spawned."""

    def __init__(self) -> None:
        self.failures = 0
        # Monotonic time before which no worker is spawned.
        self.spawn_after = 0.0

    def booted(self) -> None:
        """Start the count again: a worker booted."""
        self.failures = 0

    def killed(self, pid: int, how: str) -> None:
        """Wait a little before the next spawn: a worker was killed from outside while booting.

        It does not count towards giving up (the worker did nothing wrong), but a pause keeps
        an outside killer (the OOM killer at boot) from making a spawn loop.
        """
        logger.error(
            "worker %s %s before it booted (not counted as a boot failure); next one in %.1f s",
            pid,
            how,
            BOOT_BACKOFF,
        )
        self.spawn_after = time.monotonic() + BOOT_BACKOFF

    def failed(self, pid: int, how: str, old_serving: bool) -> bool:
        """Count a worker that died booting; return True to fall back to the old generation.

        Raise PoolFailed when there are too many in a row and no old generation serves.
        """
        self.failures += 1
        if self.failures >= MAX_BOOT_FAILURES:
            if old_serving:
                logger.error(
                    "the new workers cannot boot (last: worker %s %s); the old ones keep serving",
                    pid,
                    how,
                )
                self.failures = 0
                return True
            raise PoolFailed(
                f"workers keep failing to boot ({self.failures} in a row, the last "
                f"worker {pid} {how}); see its error above. Stopping."
            )
        delay = BOOT_BACKOFF * 2 ** (self.failures - 1)
        logger.error("worker %s %s while booting; next try in %.1f s", pid, how, delay)
        self.spawn_after = time.monotonic() + delay
        return False
