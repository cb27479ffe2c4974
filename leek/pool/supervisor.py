"""The supervisor: the server process's main loop, which keeps N worker processes busy.

    listener ────────ids──► backlog ──take()──► supervisor ──Run(ids)──► worker pipe ─► worker
                                ▲                  │  ▲                                  │
          sweep (table) ────────┘                  │  └── Booted/Started/Finished ───────┘
                                                   └── sentinel fires: worker died; its
                                                       running task is lost, ids it had
                                                       not claimed go back to the backlog

Which workers there are, how many and of which generation, is leek.pool.roster; which
worker gets which ids, and how many ahead of its need, leek.pool.dispatch; how each task
ended, counted, logged and recorded for a dead worker, leek.pool.outcomes; the limits a
worker is held to, leek.pool.limits; what the loop is given by leek.server, as Protocols,
leek.pool.interfaces.

One blocking call, a select() on one selector kept for the life of the server, watches the
signal wake-up fd, the listener's sockets, every worker's pipe and every worker's sentinel:
the whole server is this one thread. Signal handlers do nothing; the loop reads the signal
numbers and calls handle_<name>(). The supervisor never imports task code: only workers do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import time
from typing import Any

from django.utils import timezone

from leek.pool import losses, messages
from leek.pool.boot import BootGuard, PoolFailed, is_boot_failure
from leek.pool.dispatch import Dispatcher
from leek.pool.handles import WorkerHandle, WorkerState
from leek.pool.interfaces import Backlog, Listener, Reporter, Sweeper
from leek.pool.limits import Limits, kill, measure
from leek.pool.outcomes import Outcomes
from leek.pool.roster import Roster
from leek.pool.signals import SignalSocket

logger = logging.getLogger("leek.pool")

# Longest sleep of the loop; psutil limits and the sweep are checked at least this often.
TICK = 1.0
# Exit code after a second SIGINT, as shells report a process that SIGINT stopped (128 + 2).
EXIT_INTERRUPTED = 130
# Fewest seconds between two reports of the workers' state to the reporter.
REPORT_GAP = 0.2


class Supervisor:
    """Spawns, feeds, watches and replaces the worker processes."""

    def __init__(
        self,
        backlog: Backlog,
        sweeper: Sweeper,
        workers: int = 1,
        limits: Limits | None = None,
        burst: bool = False,
        listener: Listener | None = None,
        reporter: Reporter | None = None,
    ) -> None:
        self.backlog = backlog
        self.sweeper = sweeper
        self.listener = listener
        self.reporter = reporter
        # When the last report of the workers' state went.
        self.reported_at = 0.0
        self.limits = limits or Limits()
        self.burst = burst
        self.host = socket.gethostname()
        self.started_at = timezone.now()  # rows claimed since are this server's own
        self.stopping = False
        self.stop_at_once = False
        self.boot = BootGuard()
        self.next_memory_poll = 0.0
        self.dispatcher = Dispatcher(backlog)
        self.settler = losses.Settler()
        self.outcomes = Outcomes(self.settler, self.host)
        # Why workers were replaced.
        self.restarts = dict.fromkeys(_RESTARTS, 0)
        self.signals = SignalSocket()
        # What the loop waits on; each key's data says what became ready.
        self.selector = selectors.DefaultSelector()
        self.roster = Roster(self.selector, self.dispatcher, self.limits, workers)

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until told to stop; return the process exit code."""
        self.signals.install()
        self.selector.register(self.signals, selectors.EVENT_READ, ("signals", None))
        if self.listener is not None:
            self.selector.register(self.listener, selectors.EVENT_READ, ("listener", None))
        if self.reporter is not None:
            self.selector.register(self.reporter, selectors.EVENT_READ, ("orders", None))
        try:
            self.outcomes.recover(self.started_at)
            while not self.stopping:
                self.roster.maintain(self.boot.spawn_after)
                self.roster.dispatch()
                self.wait(self.timeout())
                self.enforce_limits()
                self.settler.retry_if_due(time.monotonic())
                self.sweeper.sweep_if_due(time.monotonic())
                self.stop_if_burst_done()
                self.report_if_due()
            self.drain()
        except PoolFailed as exc:
            logger.error("%s", exc)
            self.stopping = self.stop_at_once = True
            self.drain()
            return 1
        finally:
            self.signals.restore()
            self.selector.close()
        return EXIT_INTERRUPTED if self.stop_at_once else 0

    def wait(self, timeout: float) -> None:
        """Wait up to `timeout` s for signals, ids, worker messages and exits; act on them."""
        for key, _ in self.selector.select(timeout):
            self.handle(*key.data)

    def timeout(self) -> float:
        """Return how long the loop may sleep."""
        now = time.monotonic()
        limit = min(TICK, self.sweeper.seconds_left(now))
        if self.boot.spawn_after > now:
            limit = min(limit, self.boot.spawn_after - now)
        for handle in self.roster:
            if handle.task_id is not None and handle.timeout:
                limit = min(limit, handle.task_started_at + handle.timeout - now)
        if self.roster.changed and self.reporter is not None:
            limit = min(limit, self.reported_at + REPORT_GAP - now)
        return max(limit, 0.0)

    def report_if_due(self) -> None:
        """Hand the workers' state to the reporter: soon after a change, else every tick."""
        if self.reporter is None:
            return
        now = time.monotonic()
        since = now - self.reported_at
        if (self.roster.changed and since >= REPORT_GAP) or since >= TICK:
            self.reporter.report(self.stats(), urgent=self.roster.changed)
            self.roster.changed, self.reported_at = False, now

    def handle(self, kind: str, handle: WorkerHandle | None) -> None:
        """Act on one thing that became ready."""
        if kind == "signals":
            for name in self.signals.read():
                getattr(self, f"handle_{name}")()
        elif kind == "listener":
            self.listener.serve()
        elif kind == "orders":
            for task_id, pid, by in self.reporter.orders():
                self.terminate(task_id, pid, by)
        elif handle is None or handle not in self.roster:
            return  # a worker settled earlier in this round
        elif kind == "exit":
            self.on_exit(handle)
        else:
            self._read_message(handle)

    # -- workers --------------------------------------------------------------------------

    def _read_message(self, handle: WorkerHandle) -> bool:
        """Read what a worker sent in one write; return False once its pipe is closed."""
        try:
            said = handle.conn.recv()
        except (EOFError, OSError):
            return False  # the sentinel will fire
        for message in said:
            self.on_message(handle, message)
        return True

    def on_message(self, handle: WorkerHandle, message: messages.WorkerMessage) -> None:
        """Update what we know of a worker from what it says."""
        self.roster.changed = True
        if isinstance(message, messages.Booted):
            if handle.state is WorkerState.STARTING:
                handle.state = WorkerState.IDLE
            self.boot.booted()
            logger.debug("worker %s booted", handle.pid)
        elif isinstance(message, messages.Started):
            timeout = message.timeout or self.limits.task_timeout or None
            handle.started(message.task_id, message.callable_path, timeout, message.attempt)
            logger.debug(
                "task %s %s started on worker %s",
                message.task_id,
                message.callable_path,
                handle.pid,
            )
        elif isinstance(message, messages.Recording) and handle.task_id == message.task_id:
            handle.timeout = None  # it ran within its limit; only the database is slow
        elif isinstance(message, messages.Finished):
            handle.tasks_done += 1
            self.dispatcher.observe(time.monotonic() - handle.task_started_at)
            self.outcomes.finished(handle.pid, message)
            self.backlog.release(handle.done())
            if message.limited:  # its key has a free slot: hand out the next task of it
                self.sweeper.wake()
            self.check_after_task(handle)
        elif isinstance(message, messages.Skipped):
            held = handle.skipped(message.task_ids)
            self.outcomes.passed_over(held)
            for task_id in held:
                self.backlog.release(task_id)

    def check_after_task(self, handle: WorkerHandle) -> None:
        """Retire a worker that has run its quota of tasks or grew past --max-memory."""
        if handle.state not in (WorkerState.IDLE, WorkerState.BUSY):
            return
        found = self.limits.retire_reason(handle)
        if found is not None:
            cause, why = found
            self.restarts[cause] += 1
            logger.log(logging.INFO if cause == "tasks" else logging.WARNING, "%s", why)
            self.roster.retire(handle)

    def on_exit(self, handle: WorkerHandle) -> None:
        """Settle the task of a worker that ended, and count how it ended."""
        with contextlib.suppress(OSError):  # what it said before it died
            while handle.conn.poll() and self._read_message(handle):
                pass
        handle.process.join(timeout=1)
        self.roster.forget(handle)
        how = handle.describe_exit()
        if handle.task_id is not None:
            self.outcomes.lost(handle)
            self.backlog.release(handle.done())
        # It may have claimed one of the ids it was sent and died before it could say so.
        # They are back in the backlog (or in another worker's queue, or the next sweep's).
        self.dispatcher.give_back(handle)
        self.outcomes.unclaim(handle)
        if handle.state is WorkerState.STARTING and is_boot_failure(handle.process.exitcode):
            self._boot_failed(handle, how)
        elif handle.state is WorkerState.STARTING and not self.stopping:
            self.restarts["crash"] += 1
            self.boot.killed(handle.pid, how)
        elif handle.kill_kind:
            self.restarts[handle.kill_kind] += 1
        elif handle.state is not WorkerState.RETIRING and not self.stopping:
            self.restarts["crash"] += 1
            logger.error("worker %s %s; starting a replacement", handle.pid, how)
        else:
            logger.debug("worker %s %s after retiring", handle.pid, how)

    def _boot_failed(self, handle: WorkerHandle, how: str) -> None:
        if self.stopping or handle.generation != self.roster.generation:
            return  # a generation given up on already: its failures count no more
        if self.boot.failed(handle.pid, how, self.roster.old_serving()):
            self.roster.fall_back()

    def enforce_limits(self) -> None:
        """Kill busy workers past their task's time limit or the hard memory ceiling.

        Also one retired with no task that has not exited after the shutdown grace period:
        a thread or an exit handler of the task code keeps it, and it would hold a pool of
        one (it may have claimed an id it handed on) for as long as it lingers.
        """
        now = time.monotonic()
        # psutil reads /proc for each worker's tree: once a tick, not on every message.
        poll_memory = now >= self.next_memory_poll
        if poll_memory:
            self.next_memory_poll = now + TICK
        for handle in self.roster:
            if handle.killed_for:
                continue
            if poll_memory:  # idle workers' too, for the server's row (leek status)
                measure(handle)
            if handle.task_id is None:
                self.kill_if_lingering(handle, now)
                continue
            found = self.limits.kill_reason(handle, now)
            if found is not None:
                kill(handle, found[1], found[0])

    def kill_if_lingering(self, handle: WorkerHandle, now: float) -> None:
        """Kill a retired worker whose work ended more than the shutdown grace period ago."""
        grace = self.limits.shutdown_timeout
        idle_since = max(handle.retired_at, handle.task_ended_at)
        if handle.state is WorkerState.RETIRING and now - idle_since > grace:
            kill(handle, f"retired, idle for {grace:g} s and still running (a thread of a task?)")

    def stop_if_burst_done(self) -> None:
        """In burst mode, stop once nothing is queued or running, nor waits for the database."""
        if not self.burst or len(self.backlog) or self.sweeper.failed or self.settler.waiting:
            return
        if any(h.load for h in self.roster):
            return
        # A sweep ran since the last task was handed out and found nothing more.
        if self.sweeper.seconds_left(time.monotonic()) > 0:
            self.stopping = True

    # -- shutdown -------------------------------------------------------------------------

    def drain(self) -> None:
        """Retire every worker, give running tasks the grace period, then kill the rest."""
        for handle in self.roster:
            self.roster.retire(handle)
        grace = self.limits.shutdown_timeout
        deadline = time.monotonic() + (0 if self.stop_at_once else grace)
        while self.roster and not self.stop_at_once:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.wait(min(left, TICK))
        for handle in self.roster:
            if self.stop_at_once:
                kill(handle, "the server was told to stop at once")
            else:
                kill(handle, f"still running {grace:g} s after shutdown began")
            handle.process.join(timeout=5)
            self.on_exit(handle)
        self.settler.abandon()

    def terminate(self, task_id: int, pid: int, by: str) -> None:
        """Kill the worker `pid` if it still runs task `task_id`, as operator `by` asked."""
        for handle in self.roster:
            if handle.pid == pid and handle.task_id == task_id and not handle.kill_kind:
                kill(handle, f"terminated by {by}", "terminated")

    # -- signals --------------------------------------------------------------------------

    def handle_term(self) -> None:
        """Stop dispatching; running tasks get the grace period."""
        logger.info("SIGTERM: finishing running tasks (up to %s s)", self.limits.shutdown_timeout)
        self.stopping = True

    def handle_int(self) -> None:
        """First Ctrl-C: as SIGTERM; a second one: stop at once."""
        if self.stopping:
            logger.warning("second SIGINT: stopping at once")
            self.stop_at_once = True
            return
        logger.info("SIGINT: finishing running tasks (Ctrl-C again to stop at once)")
        self.stopping = True

    def handle_hup(self) -> None:
        """Reload: start a fresh generation; the old one retires once it has booted."""
        self.roster.new_generation()
        self.restarts["reload"] += 1
        logger.info("SIGHUP: starting worker generation %s", self.roster.generation)

    def handle_ttin(self) -> None:
        """Add one worker."""
        self.roster.size += 1
        logger.info("SIGTTIN: %s workers", self.roster.size)

    def handle_ttou(self) -> None:
        """Remove one worker (never the last)."""
        self.roster.size = max(1, self.roster.size - 1)
        logger.info("SIGTTOU: %s workers", self.roster.size)

    def handle_usr1(self) -> None:
        """Log one status line per worker."""
        now = time.monotonic()
        logger.info(
            "status: %s queued, counts %s, restarts %s",
            len(self.backlog),
            self.outcomes.counts,
            self.restarts,
        )
        for handle in self.roster:
            logger.info("status: worker %s", handle.snapshot(now))

    def stats(self) -> dict[str, Any]:
        """Return the workers and counters, for the `stats` wire command."""
        now = time.monotonic()
        return {
            "pid": os.getpid(),
            "size": self.roster.size,
            "generation": self.roster.generation,
            "workers": [h.snapshot(now) for h in self.roster],
            "counts": dict(self.outcomes.counts),
            "restarts": dict(self.restarts),
            "queued": len(self.backlog),
            "prefetch": self.dispatcher.depth(),
            "skipped": self.outcomes.skipped,
        }


_RESTARTS = ("crash", "memory", "timeout", "tasks", "reload", "terminated")
