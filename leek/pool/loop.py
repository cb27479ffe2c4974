"""The loop of a worker process: take ids from the supervisor, claim, run, record.

Runs in each worker process, after django.setup() (leek.pool.worker boots it). The
supervisor may send a few ids ahead. They stay READY in the table until the worker claims
one, which it does in the same transaction that records the task before it: one write per
task, and a task whose worker dies before claiming it was never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import time
from collections import deque
from multiprocessing.connection import Connection

import psutil
from django.db import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    reset_queries,
)

from leek import hotpath, runner
from leek.hotpath import Claimed
from leek.pool import messages
from leek.runner import Outcome

logger = logging.getLogger("leek.worker")

# Seconds before a refused outcome is written again, doubled each time up to the maximum.
RECORD_BACKOFF = 0.05
RECORD_BACKOFF_MAX = 1.0
# Tries of an outcome that met another task's fresh unique key before it is given up on.
UNIQUE_TRIES = 3


class Worker:
    """The loop of a worker process: read ids, record the last task and claim the next."""

    def __init__(self, conn: Connection, max_memory: int) -> None:
        self.conn = conn
        # conn.poll() makes a selector at each call; this is one syscall.
        self.poller = select.poll()
        self.poller.register(conn.fileno(), select.POLLIN)
        self.max_memory = max_memory
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.alias = runner.database()
        # Ids sent by the supervisor and not yet claimed, in order.
        self.pending: deque[int] = deque()
        # Ids tried in a transaction that failed: their claim may have been committed.
        self.uncertain: set[int] = set()
        self.retiring = False
        # The task being run was claimed under a limit key (leek.throttle).
        self.limited = False
        # The outcome just recorded was dropped: its row had moved on.
        self.dropped = False

    def serve(self) -> None:
        """Run tasks until retired; the last one's outcome is recorded before leaving."""
        done = None  # the outcome of the task just run, not yet recorded
        while True:
            may_claim = not self.retiring and not self.over_memory()
            if not self.retiring:
                self.read(block=done is None and (not self.pending or not may_claim))
                may_claim = may_claim and not self.retiring
            if done is None and self.retiring:
                self.hand_back()
                return
            # Over its memory limit with nothing to record, it waits to be retired.
            task = self.step(done, may_claim) if done is not None or may_claim else None
            done = None if task is None else runner.execute(task)

    def read(self, block: bool) -> None:
        """Take in what the supervisor sent; wait for a message when `block`."""
        try:
            while block or self.poller.poll(0):
                block = False
                message = self.conn.recv()
                if isinstance(message, messages.Retire):
                    self.retiring = True
                    return
                self.pending.extend(message.task_ids)
        except (EOFError, OSError):
            self.retiring = True  # the supervisor is gone

    def hand_back(self) -> None:
        """Say, on leaving, which ids sent ahead it never claimed: the pool may go on at once.

        Not those tried in a transaction that failed: one may be claimed, and the server
        takes it up when this process has exited.
        """
        ids = tuple(i for i in self.pending if i not in self.uncertain)
        if ids:
            self.send(messages.Skipped(ids))

    def over_memory(self) -> bool:
        """Tell whether this process passed its memory limit (then it claims nothing)."""
        if not self.max_memory:
            return False
        return psutil.Process().memory_info().rss > self.max_memory * 2**20

    def step(self, done: Outcome | None, may_claim: bool) -> Claimed | None:
        """Record `done` and claim the next pending task, in one transaction; return it.

        Between two tasks the worker does what Django's request cycle does: it resets the
        query log and closes connections that are broken or past CONN_MAX_AGE. While the
        database is away, the transaction is tried again, on a new connection, until it is
        taken: the task ran, its claim still stands, and a claim whose COMMIT was not seen is
        taken up again (Writer.reclaim) rather than left RUNNING with nobody on it (issue 13).
        """
        tries = 0
        while True:
            try:
                task, tried = self.record_and_claim(done, may_claim, retrying=tries > 0)
            except DatabaseError as exc:
                gone = isinstance(exc, OperationalError | InterfaceError)
                if done is None and not gone:
                    self.claim_failed(exc)
                    return None
                tries += 1
                if done is None:
                    self.wait(exc, tries)
                else:
                    done = self.record_refused(done, exc, tries)
                continue
            if tries and done is not None:
                logger.info(
                    "worker %s: recorded task %s %s after %s tries",
                    self.pid,
                    done.task_id,
                    done.callable_path,
                    tries + 1,
                )
            break
        for _ in tried:
            self.pending.popleft()
        said: list[messages.WorkerMessage] = []
        if done is not None:
            path, status = done.callable_path, done.status
            said.append(
                messages.Finished(
                    done.task_id,
                    path,
                    status,
                    done.duration,
                    done.error,
                    self.limited,
                    self.dropped,
                )
            )
        skipped = tuple(tried[:-1] if task is not None else tried)
        if skipped:
            said.append(messages.Skipped(skipped))
        if task is not None:
            said.append(
                messages.Started(task.task_id, task.callable_path, task.timeout, task.attempts)
            )
        self.limited = task is not None and task.limited
        self.send(*said)
        return task

    def record_and_claim(
        self, done: Outcome | None, may_claim: bool, retrying: bool = False
    ) -> tuple[Claimed | None, list[int]]:
        """Run the transaction; return the task claimed and the ids it tried to claim.

        `retrying`: the database failed the last try of this transaction.
        """
        tried: list[int] = []
        task = None
        reset_queries()
        close_old_connections()
        self.dropped = False
        try:
            with hotpath.transaction(self.alias, raw=True) as writer:
                if done is not None and not runner.record(writer, done, self.pid, self.host):
                    self.not_written(done, retrying)
                for task_id in self.pending if may_claim else ():
                    tried.append(task_id)
                    task = writer.claim(task_id, self.pid, self.host)
                    if task is None and task_id in self.uncertain:
                        task = writer.reclaim(task_id, self.pid, self.host)
                    if task is not None or writer.refused:
                        break
        except DatabaseError:
            self.uncertain.update(tried)
            raise
        self.uncertain.difference_update(tried)
        return task, tried

    def claim_failed(self, exc: DatabaseError) -> None:
        """Give back the ids sent ahead: the database failed their claim."""
        ids = ", ".join(str(i) for i in list(self.pending)[:5])
        logger.exception("worker %s: database error claiming task %s", self.pid, ids)
        self.send(messages.Skipped(tuple(self.pending), f"{type(exc).__name__}: {exc}"))
        self.pending.clear()

    def record_refused(self, done: Outcome, exc: DatabaseError, tries: int) -> Outcome:
        """Return the outcome to write next, after the database failed to take `done`.

        A database that went away comes back: the same outcome, after a pause. One that
        answers and refuses this outcome (too large, text it cannot store) gets a short
        FAILED saying so; if it refuses even that, the worker dies and the task is lost.
        """
        if isinstance(exc, OperationalError | InterfaceError):
            if tries == 1:  # the run is over: the time limit must not kill the write
                self.send(messages.Recording(done.task_id))
            self.wait(exc, tries, done)
            return done
        if isinstance(exc, IntegrityError) and tries <= UNIQUE_TRIES:
            # Back to READY, its unique key taken by a task offloaded between the check and
            # the write: the next transaction sees the holder and drops this one's key.
            return done
        if done.class_path == runner.REFUSED:
            raise exc
        logger.exception(
            "worker %s: the database refused the outcome of task %s %s",
            self.pid,
            done.task_id,
            done.callable_path,
        )
        return runner.unrecordable(done, exc)

    def wait(self, exc: DatabaseError, tries: int, done: Outcome | None = None) -> None:
        """Wait for a database that went away: a growing pause, at most RECORD_BACKOFF_MAX.

        The ids sent ahead stay with this worker meanwhile: one may have been claimed in the
        transaction that failed (self.uncertain), and only this worker can take it up again.
        """
        delay = min(RECORD_BACKOFF * 2 ** (tries - 1), RECORD_BACKOFF_MAX)
        what = (
            "claiming" if done is None else f"recording task {done.task_id} {done.callable_path}"
        )
        log = logger.error if tries == 1 else logger.debug
        log(
            "worker %s: database error %s (%s: %s); trying again every %g s at most",
            self.pid,
            what,
            type(exc).__name__,
            exc,
            RECORD_BACKOFF_MAX,
        )
        time.sleep(delay)

    def not_written(self, done: Outcome, retrying: bool) -> None:
        """Take in that the row had moved on when `done` was to be written."""
        if retrying and runner.recorded_before(self.alias, done, self.pid, self.host):
            logger.info(
                "worker %s: task %s %s was recorded by the try the database did not answer",
                self.pid,
                done.task_id,
                done.callable_path,
            )
            return
        self.dropped = True
        self.discarded(done)

    def discarded(self, done: Outcome) -> None:
        """Say that the row of a task this worker ran had moved on: its outcome is dropped."""
        logger.warning(
            "worker %s: the outcome of task %s %s (%s) was discarded: the row is no longer "
            "RUNNING under this worker's claim (settled by a server that took the worker "
            "for lost)",
            self.pid,
            done.task_id,
            done.callable_path,
            done.status,
        )

    def send(self, *said: messages.WorkerMessage) -> None:
        """Tell the supervisor, in one write; if it is gone, the loop ends at its next read."""
        with contextlib.suppress(OSError):
            self.conn.send(said)
