"""The server's row in the table, written from a thread of its own, and the operators' orders.

Runs in the server process, in a thread beside the supervisor's loop, with its own database
connection (Django's connections are per thread). The loop hands it snapshots of its workers
(`report`) and never waits for the database: a slow or absent database delays only this
thread. Each beat writes the latest snapshot; a beat the database refuses is tried again at
the next one. Every second the thread also reads the terminations operators asked for on
the tasks this server's workers hold, and hands them to the loop (`orders`), waking it
through a socket its selector watches. It also runs the retention's purge, a small batch at
a time (leek.retention), and at each beat settles the tasks of servers whose lease ran out
(leek.server.leases).

    supervisor loop ──report(stats)──► Heartbeat thread ──UPDATE──► leek_server row
          ▲                                   │
          └──── wake-up socket, orders() ◄────┴──── SELECT terminations (leek_task)
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from django.db import DatabaseError, InterfaceError, connections, router, transaction
from django.utils import timezone

from leek import dbclock, retention
from leek.models import Server, Task, TaskStatus
from leek.server import leases

logger = logging.getLogger("leek.server")

# Seconds between two reads of the operators' orders.
ORDERS_INTERVAL = 1.0
# Fewest seconds between two writes of the row, however often the workers change.
MIN_GAP = 0.25

# An order for the loop: kill the worker `pid` that holds task `task_id`, asked by `by`.
Order = tuple[int, int, str]


class Heartbeat:
    """Keeps the server's row up to date and passes the operators' orders to the loop."""

    def __init__(
        self,
        address: str,
        pools: Sequence[str],
        interval: float,
        purge: retention.Purger | None = None,
        lease: float = 0.0,
    ) -> None:
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.address = address
        self.pools = list(pools)
        self.interval = interval
        self.purge = purge
        # Settle the tasks of servers silent for this long (0: never).
        self.lease = lease
        self.server_id: int | None = None
        # READY tasks in the table at the last beat (None: the database did not answer), for
        # the `stats` wire command, which the loop answers without asking the database.
        self.ready: int | None = None
        self.started_at = timezone.now()
        self._lock = threading.Lock()
        self._snapshot: dict[str, Any] = {}
        self._changed = threading.Event()
        self._stopping = threading.Event()
        self._orders: queue.SimpleQueue[Order] = queue.SimpleQueue()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="leek-heartbeat", daemon=True)

    # -- the loop's side ------------------------------------------------------------------

    def fileno(self) -> int:
        """Return the fd that becomes readable when orders are waiting."""
        return self._wake_read.fileno()

    def report(self, snapshot: dict[str, Any], urgent: bool = False) -> None:
        """Take the loop's latest stats; `urgent`: write them now, not at the next beat."""
        with self._lock:
            self._snapshot = snapshot
        if urgent:
            self._changed.set()

    def orders(self) -> list[Order]:
        """Return the orders waiting for the loop."""
        with contextlib.suppress(BlockingIOError):
            while self._wake_read.recv(4096):
                pass
        found = []
        with contextlib.suppress(queue.Empty):
            while True:
                found.append(self._orders.get_nowait())
        return found

    # -- the thread -----------------------------------------------------------------------

    def start(self) -> None:
        """Start beating."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write the last beat with stopped_at set, and end the thread."""
        self._stopping.set()
        self._changed.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("the heartbeat did not write the server's stop within %g s", timeout)
        self._wake_read.close()
        self._wake_write.close()

    def _run(self) -> None:
        next_beat = next_orders = 0.0
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                if now >= next_beat or self._changed.is_set():
                    self._changed.clear()
                    self._attempt("the server's heartbeat", self._beat)
                    self._attempt("the count of READY tasks", self._count_ready)
                    if self.lease:
                        self._attempt("the tasks of silent servers", self._settle)
                    next_beat = now + self.interval
                if now >= next_orders:
                    self._attempt("the operators' orders", self._read_orders)
                    if self.purge is not None:
                        self._attempt("the retention's purge", self.purge.step)
                    next_orders = now + ORDERS_INTERVAL
                self._stopping.wait(MIN_GAP)
                self._changed.wait(max(0.0, min(next_beat, next_orders) - time.monotonic()))
            self._attempt("the server's stop", lambda: self._beat(stopped=True))
        finally:
            connections[router.db_for_write(Server)].close()

    def _attempt(self, what: str, write: Any) -> None:
        """Run one database step; a refused one is logged and left for the next round."""
        alias = router.db_for_write(Server)
        try:
            # Each statement is bounded by LEEK["db_timeout"] (leek.server.dbtimeouts).
            with transaction.atomic(using=alias):
                write()
        except (DatabaseError, InterfaceError) as exc:
            logger.warning("cannot write %s, trying again: %s", what, exc)
            connections[alias].close()  # a broken connection is replaced, not used again
        except Exception:  # noqa: BLE001 - thread boundary: a dead heartbeat looks like a dead server
            logger.exception("error in %s; trying again at the next round", what)

    def _beat(self, stopped: bool = False) -> None:
        with self._lock:
            snapshot = self._snapshot
        now = dbclock.now(router.db_for_write(Server))
        values = {
            "heartbeat_at": now,
            "workers": [] if stopped else snapshot.get("workers", []),
            "counts": snapshot.get("counts", {}),
            "restarts": snapshot.get("restarts", {}),
        }
        values["stopped_at"] = now if stopped else None
        mine = Server.objects.filter(pk=self.server_id)
        written = self.server_id is not None and mine.filter(stopped_at__isnull=True).update(
            **values
        )
        if not written and self.server_id is not None and mine.update(**values):
            # Taken for gone by another server (leek.server.leases): live again, but the
            # tasks it ran meanwhile were settled, and their outcomes will be discarded.
            written = True
            if not stopped:
                logger.error(
                    "server %s:%s beats again after its lease ran out: another server took "
                    "it for gone and settled the tasks its workers were running; their "
                    "outcomes will be discarded",
                    self.host,
                    self.pid,
                )
        if not written:
            if stopped:
                return  # never got a row: nothing to mark
            # The first beat, or the row was deleted meanwhile (a purge of servers gone).
            row = Server.objects.create(
                host=self.host,
                pid=self.pid,
                address=self.address,
                pools=self.pools,
                started_at=self.started_at,
                **values,
            )
            self.server_id = row.pk

    def _count_ready(self) -> None:
        self.ready = None
        self.ready = Task.objects.filter(status=TaskStatus.READY).count()

    def _settle(self) -> None:
        leases.settle_stale(self.host, self.pid, self.lease)

    def _read_orders(self) -> None:
        with self._lock:
            workers = self._snapshot.get("workers", [])
        held = {w["task"]: w["pid"] for w in workers if w.get("task") is not None}
        if not held:
            return
        found = Task.objects.terminations_for(held)
        for order in found:
            self._orders.put(order)
        if found:
            with contextlib.suppress(BlockingIOError):
                self._wake_write.send(b"!")
