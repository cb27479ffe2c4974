"""The server's scheduler: enqueue each due slot of the periodic tasks, once among all servers.

Runs in the server process, in a thread of its own with its own database connection, beside
the supervisor's loop, which it never blocks. It reads the enabled schedules from the table
(the workers wrote them at boot, leek.schedule_records), asks leek.schedules what each needs
now, and takes a due slot in one transaction: the task row (JSON-encoded, as the Django
Tasks backend's are, so no task code is imported here) and the slot's row, which a unique
(schedule, slot) admits once. Another server that took the slot first makes the insert fail
with an IntegrityError, and the transaction, task row included, is rolled back. Nothing in
memory decides who runs a slot, so servers can come and go. Then it tells its own listener
the new id; if that fails, the sweep finds the row.

    Schedule rows ──read──► Scheduler thread ──INSERT task + ScheduleRun (unique)──► table
                                  └──── notify id ──► own listener ──► backlog ──► worker
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime

from django.conf import settings as django_settings
from django.db import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connections,
    router,
    transaction,
)
from django.db.models import Q
from django.utils import timezone

from leek import api, dbclock, hotpath, schedules, serialize
from leek.models import Encoding, Schedule, ScheduleRun, SlotSkip, Task, TaskStatus

logger = logging.getLogger("leek.server")

# Slots of one schedule taken in one round, at most (one a second for a minute late).
MAX_SLOTS_A_ROUND = 100
# Longest wait between two reads of the schedules (new ones, enabled, disabled).
MAX_WAIT = 1.0
# Seconds before the next round after a database error.
RETRY_AFTER = 1.0
# Slot rows kept per schedule, and seconds between two prunings of the older ones.
KEEP_RUNS = 1000
PRUNE_INTERVAL = 60.0

# Tell the server's own listener of new READY ids: (pool, priority, ids).
Announce = Callable[[str, int, list[int]], None]


def stored(moment: datetime) -> datetime:
    """Return an aware datetime as the database takes it."""
    return moment if django_settings.USE_TZ else timezone.make_naive(moment)


class Scheduler:
    """Takes the due slots of the periodic tasks, from a thread of its own."""

    def __init__(self, announce: Announce) -> None:
        self.announce = announce
        self.zone = schedules.site_zone()
        self.server = f"{socket.gethostname()}:{os.getpid()}"
        self._pruned_at = -math.inf
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leek-scheduler", daemon=True)

    def start(self) -> None:
        """Start taking slots."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the round in progress."""
        self._stopping.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        alias = router.db_for_write(Schedule)
        try:
            while not self._stopping.is_set():
                wait = RETRY_AFTER
                try:
                    wait = self.tick()
                except (DatabaseError, InterfaceError) as exc:
                    logger.warning("scheduler: cannot read or take slots, trying again: %s", exc)
                    with contextlib.suppress(DatabaseError, InterfaceError):
                        connections[alias].close()  # a broken connection is replaced
                except Exception:  # noqa: BLE001 - thread boundary: log, and go on next round
                    logger.exception("scheduler: error in a round; trying again")
                self._stopping.wait(wait)
        finally:
            with contextlib.suppress(DatabaseError, InterfaceError):
                connections[alias].close()

    def tick(self, now: datetime | None = None) -> float:
        """Take what is due among the enabled schedules; return the seconds to the next round.

        `now` is the database's clock, as the servers' heartbeats are: every server reads
        the same time, whatever its host's clock says.
        """
        alias = router.db_for_write(Schedule)
        now = schedules.aware(now or dbclock.now(alias))
        wait = MAX_WAIT
        rows = list(Schedule.objects.using(alias).filter(enabled=True, declared=True))
        for row in rows:
            try:
                spec = row.spec
                self._take_due(row, spec, now)
            except (ArithmeticError, TypeError, ValueError) as exc:  # a row edited into nonsense
                logger.error("schedule %s cannot run: %s", row.name, exc)
                continue
            except (OperationalError, InterfaceError):
                raise  # the connection: the round ends, and the next has a new one
            except DatabaseError as exc:  # this schedule's rows (a lock that timed out)
                logger.error("schedule %s: cannot take its slot, trying again: %s", row.name, exc)
                continue
            # A little past the slot, so that the clock has surely reached it.
            wait = min(wait, schedules.seconds_to_next(spec, now, self.zone) + 0.001)
        if now.timestamp() - self._pruned_at >= PRUNE_INTERVAL:
            self._pruned_at = now.timestamp()
            prune(rows)
        return wait

    def _take_due(self, row: Schedule, spec: schedules.Spec, now: datetime) -> None:
        """Take the schedule's due slots, each in turn (a slow round may have left several)."""
        for _ in range(MAX_SLOTS_A_ROUND):
            last, since = schedules.aware(row.last_slot), schedules.aware(row.since)
            decision = schedules.decide(spec, now, self.zone, last, since)
            if decision.action is schedules.Action.WAIT or not self._take(row, decision):
                return

    def _take(self, row: Schedule, decision: schedules.Decision) -> bool:
        """Insert the slot's row (and its task's) unless another server did; say if it did.

        The schedule's row is locked first, and skipped if another server holds it: that
        server is taking a slot of it, and the slot's unique row is only the backstop.
        """
        slot = decision.slot
        skipped = ""
        if decision.action is schedules.Action.SKIP_MISSED:
            skipped = SlotSkip.MISSED
        elif not row.overlap and previous_unfinished(row):
            skipped = SlotSkip.OVERLAP
        alias = router.db_for_write(ScheduleRun)
        task_id = None
        later = Q(last_slot__isnull=True) | Q(last_slot__lt=stored(slot))
        try:
            with transaction.atomic(using=alias):
                mine = Schedule.objects.using(alias).filter(
                    later, pk=row.pk, enabled=True, declared=True
                )
                if not mine.select_for_update(skip_locked=True).values_list("pk").first():
                    return False  # taken, disabled, or being taken by another server
                if not skipped:
                    task_id = self._insert_task(row, alias)
                ScheduleRun.objects.using(alias).create(
                    schedule=row, slot=stored(slot), task_id=task_id, skipped=skipped,
                    server=self.server,
                )  # fmt: skip
                mine.update(last_slot=stored(slot))
        except IntegrityError:
            return False  # another server took this slot
        row.last_slot = slot
        when = slot.astimezone(self.zone).isoformat()
        if task_id is None:
            logger.info("schedule %s: slot %s skipped (%s)", row.name, when, skipped)
            return True
        logger.info("schedule %s: slot %s enqueued task %s %s", row.name, when, task_id,
                    row.callable_path)  # fmt: skip
        try:
            self.announce(row.pool, row.priority, [task_id])
        except OSError as exc:
            logger.debug("task %s is left to the sweep: %s", task_id, exc)
        return True

    @staticmethod
    def _insert_task(row: Schedule, alias: str) -> int:
        options = api.TaskOptions(
            pool=row.pool, priority=row.priority, timeout=row.timeout, retries=row.retries,
            retry_backoff=row.retry_backoff, lost_retries=row.lost_retries,
        )  # fmt: skip
        payload = serialize.dumps_json({"args": row.args, "kwargs": row.kwargs})
        values = api.row(options, row.callable_path, payload, Encoding.JSON, timezone.now())
        return hotpath.insert(alias, [values])[0]


def previous_unfinished(row: Schedule) -> bool:
    """Tell whether the task of the schedule's latest run is still READY or RUNNING."""
    runs = ScheduleRun.objects.filter(schedule=row, task_id__isnull=False).order_by("-slot")
    last = runs.values_list("task_id", flat=True).first()
    waiting = (TaskStatus.READY, TaskStatus.RUNNING)
    return last is not None and Task.objects.filter(pk=last, status__in=waiting).exists()


def prune(rows: list[Schedule]) -> None:
    """Delete the slot rows of each schedule but its latest KEEP_RUNS."""
    for row in rows:
        runs = ScheduleRun.objects.filter(schedule=row)
        newest_first = runs.order_by("-slot").values_list("slot", flat=True)
        found = list(newest_first[KEEP_RUNS - 1 : KEEP_RUNS])  # the oldest slot kept
        if found:
            runs.filter(slot__lt=found[0]).delete()
