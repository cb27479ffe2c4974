"""Every transition of a task row but the three of the hot path, each one conditional UPDATE.

Read and written by the web process (an operator's retry, cancel or terminate), the server
(recovery and losses of workers, the sweep's queries) and the workers (failures, retries,
snoozes). Each UPDATE's WHERE names the from-state (and the claim), and says whether it
happened: a late write from a worker already declared lost changes nothing. The insert, the
claim and the success are in leek.hotpath, in plain SQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connections, models, router, transaction
from django.db.models import F
from django.utils import timezone

from leek.states import (
    CANCELLED,
    SNOOZED,
    Attempt,
    Claim,
    ControlAction,
    TaskStatus,
)

# Seconds unclaim waits for a row lock before it gives up (and is tried again later).
UNCLAIM_LOCK_TIMEOUT = 2


class TaskQuerySet(models.QuerySet):
    """Transitions of task rows, each one conditional UPDATE."""

    def unclaim(self, task_ids: Iterable[int], pid: int, host: str) -> list[int]:
        """Undo the claims of a worker `pid` on `host` that died before it started the tasks.

        Return the ids that were claimed. Each row is locked before it is looked at: a
        worker killed just after it sent COMMIT may have its claim become visible on
        PostgreSQL only after the worker is gone, and an UPDATE whose WHERE names RUNNING
        would skip the row it still sees READY and leave it RUNNING for good. The lock waits
        for that commit, or for the rollback of a transaction the dead worker left open. One
        row at a time, so no lock is held while waiting for another, and on PostgreSQL for
        at most UNCLAIM_LOCK_TIMEOUT (the error that follows is the caller's, to retry).
        """
        alias = router.db_for_write(self.model)
        connection = connections[alias]
        lock = connection.features.has_select_for_update
        found: list[int] = []
        for task_id in task_ids:
            with transaction.atomic(using=alias):
                if lock and connection.vendor == "postgresql":
                    with connection.cursor() as cursor:
                        cursor.execute(f"SET LOCAL lock_timeout = '{UNCLAIM_LOCK_TIMEOUT}s'")
                if lock:
                    list(self.using(alias).select_for_update().filter(id=task_id).values("id"))
                # Another host's worker may have the same pid (containers of one image).
                claimed = self.using(alias).filter(
                    id=task_id, status=TaskStatus.RUNNING, worker_pid=pid, worker_host=host
                )
                if claimed.update(
                    status=TaskStatus.READY,
                    started_at=None,
                    worker_pid=None,
                    worker_host="",
                    attempts=F("attempts") - 1,
                    **self.using(alias)._unique_taken(task_id),
                ):
                    found.append(task_id)
        return found

    def fail(self, task_id: int, claim: Claim, exception_class_path: str, traceback: str) -> bool:
        """Record that the task failed under `claim`."""
        return self._finish(
            task_id,
            claim,
            status=TaskStatus.FAILED,
            exception_class_path=exception_class_path,
            traceback=traceback,
        )

    def retry(
        self, task_id: int, claim: Claim, delay: float, exception_class_path: str, traceback: str
    ) -> bool:
        """Make a task that raised under `claim` READY again after `delay` s, keeping the error.

        The attempt that ended goes into `history`; the row's error fields keep its error
        until the next attempt ends.
        """
        return self._again_after(
            task_id,
            claim,
            delay,
            exception_class_path,
            traceback,
            exception_class_path=exception_class_path,
            traceback=traceback,
        )

    def snooze(self, task_id: int, claim: Claim, delay: float, text: str) -> bool:
        """Make a task that raised Snooze under `claim` READY again in `delay` s.

        Its attempt is given back, so it spends no retry; the snooze is in `history`, and
        the row's error fields keep what they held.
        """
        return self._again_after(task_id, claim, delay, SNOOZED, text, attempts=F("attempts") - 1)

    def _again_after(
        self, task_id: int, claim: Claim, delay: float, class_path: str, text: str, **values: Any
    ) -> bool:
        """End the attempt `claim` runs as `class_path`; READY again in `delay` s."""
        now = timezone.now()
        run_after = now + timedelta(seconds=delay)
        again = {"status": TaskStatus.READY, "run_after": run_after, **values}
        return self._end_attempt(task_id, claim, now, class_path, text, **again)

    def _end_attempt(
        self,
        task_id: int,
        claim: Claim,
        now: datetime,
        class_path: str,
        text: str,
        **values: Any,
    ) -> bool:
        """Move the attempt `claim` runs into `history` and write `values`.

        Read, then one conditional UPDATE: only the holder of a RUNNING row (the worker, or
        the supervisor settling it) writes it, and of two such writes the second finds the
        row moved on and changes nothing.
        """
        running = claim.of(self, task_id)
        found = running.values_list("history", "started_at").first()
        if found is None:
            return False
        history, started_at = found
        attempt = Attempt(
            started_at=started_at,
            finished_at=now,
            worker=f"{claim.host}:{claim.pid}",
            exception_class_path=class_path,
            traceback=text,
        )
        # Back to READY: the next claim writes its own start and worker.
        ended = {"started_at": None, "worker_pid": None, "worker_host": ""}
        if values.get("status") == TaskStatus.READY:
            ended.update(self._unique_taken(task_id))
        return bool(running.update(history=[*history, attempt.to_json()], **ended, **values))

    def _unique_taken(self, task_id: int) -> dict[str, Any]:
        """Return what a task going back to READY must change when its unique key is taken.

        Another task took the key while this one ran (unique_until "start"): this one runs
        again without a key rather than not at all.
        """
        key = self.filter(id=task_id).values_list("unique_key", flat=True).first()
        if key and self.filter(unique_hold=key).exclude(id=task_id).exists():
            return {"unique_key": None}
        return {}

    def lose(
        self, task_id: int, claim: Claim, reason: str, path: str = "leek.exceptions.WorkerLost"
    ) -> str:
        """Settle a task whose worker died under `claim`: READY again if lost_retries allow.

        Return the new status, or "" when the task was not under that claim any more.
        """
        text = f"{path}: {reason}"
        found = claim.of(self, task_id).values_list("history", "lost_retries").first()
        if found is None:
            return ""
        history, lost_retries = found
        # The losses before this one: an attempt that raised spends a retry, not these.
        lost = sum(1 for entry in history if entry.get("exception_class_path") == path)
        if lost < lost_retries and self._end_attempt(
            task_id,
            claim,
            timezone.now(),
            path,
            text,
            status=TaskStatus.READY,
            exception_class_path=path,
            traceback=text,
        ):
            return TaskStatus.READY
        if self.fail(task_id, claim, path, text):
            return TaskStatus.FAILED
        return ""

    def rerun(self, task_id: int, by: str) -> bool:
        """Make a FAILED task READY again, a new attempt of the same call, for operator `by`.

        The attempt that ended (or the cancel) goes into `history`; the row's error fields
        keep its error until the next attempt ends.
        """
        failed = self.filter(id=task_id, status=TaskStatus.FAILED)
        found = failed.values_list(
            "history", "started_at", "finished_at", "worker_host", "worker_pid",
            "exception_class_path", "traceback",
        ).first()  # fmt: skip
        if found is None:
            return False
        history, started_at, finished_at, host, pid, class_path, text = found
        ended = Attempt(
            started_at=started_at,
            finished_at=finished_at,
            worker=f"{host}:{pid}" if pid else "",
            exception_class_path=class_path,
            traceback=text,
        )
        now = timezone.now()
        values = {
            "status": TaskStatus.READY,
            "history": [*history, ended.to_json()],
            "run_after": now,
            "started_at": None,
            "finished_at": None,
            "worker_pid": None,
            "worker_host": "",
            "control_action": ControlAction.RETRY,
            "control_by": by,
            "control_at": now,
            **self._unique_taken(task_id),
        }
        try:
            with transaction.atomic(using=failed.db):
                return bool(failed.update(**values))
        except IntegrityError:  # its key taken since the check: it runs without it
            return bool(failed.update(**{**values, "unique_key": None}))

    def cancel(self, task_id: int, by: str) -> bool:
        """End a READY task FAILED with Cancelled before it starts, for operator `by`."""
        now = timezone.now()
        return bool(
            self.filter(id=task_id, status=TaskStatus.READY).update(
                status=TaskStatus.FAILED,
                finished_at=now,
                exception_class_path=CANCELLED,
                traceback=f"{CANCELLED}: cancelled by {by}",
                control_action=ControlAction.CANCEL,
                control_by=by,
                control_at=now,
            )
        )

    def request_termination(self, task_id: int, by: str) -> bool:
        """Ask, for operator `by`, that the server holding a RUNNING task kill its worker.

        The server reads the request (terminations_for) and ends the task FAILED with
        Terminated through the loss of its worker.
        """
        return bool(
            self.filter(id=task_id, status=TaskStatus.RUNNING).update(
                control_action=ControlAction.TERMINATE, control_by=by, control_at=timezone.now()
            )
        )

    def terminations_for(self, held: dict[int, int]) -> list[tuple[int, int, str]]:
        """Return (id, pid, by) of the tasks in `held` (id -> worker pid) asked to terminate."""
        rows = self.filter(
            id__in=list(held), status=TaskStatus.RUNNING, control_action=ControlAction.TERMINATE
        ).filter(control_at__gte=F("started_at"))  # asked of this attempt, not an earlier one
        return [
            (task_id, pid, by)
            for task_id, pid, by in rows.values_list("id", "worker_pid", "control_by")
            if held.get(task_id) == pid
        ]

    def _finish(self, task_id: int, claim: Claim, **values: Any) -> bool:
        return bool(claim.of(self, task_id).update(finished_at=timezone.now(), **values))

    def running_on(self, host: str) -> models.QuerySet:
        """Return the tasks that workers on `host` hold."""
        return self.filter(status=TaskStatus.RUNNING, worker_host=host)

    def due(self, pools: Iterable[str], limit: int) -> list[tuple[int, int]]:
        """Return (id, priority) of READY tasks due now, in dispatch order, at most `limit`.

        Tasks of paused pools are left out: they wait in the table until resumed; and so are
        tasks under limits, which leek.throttle reads.
        """
        rows = self.filter(
            status=TaskStatus.READY, run_after__lte=timezone.now(), limit_key__isnull=True
        )
        pauses = self.model._meta.apps.get_model("leek", "PoolPause").objects
        rows = rows.exclude(pool__in=pauses.values("pool"))
        pools = tuple(pools)
        if pools:
            rows = rows.filter(pool__in=pools)
        return list(rows.order_by("-priority", "id").values_list("id", "priority")[:limit])

    def next_run_after(self, pools: Iterable[str]) -> datetime | None:
        """Return when the earliest READY task that is not yet due becomes due."""
        rows = self.filter(status=TaskStatus.READY, run_after__gt=timezone.now())
        pools = tuple(pools)
        if pools:
            rows = rows.filter(pool__in=pools)
        return rows.aggregate(first=models.Min("run_after"))["first"]
