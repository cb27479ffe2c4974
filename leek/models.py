"""The task table, the single source of truth, and every state transition of a task.

Read and written by the web process (offload, query), the server (sweep, recovery of lost
tasks) and the workers (claim, record the outcome). Each transition is one conditional UPDATE
whose WHERE names the from-state (and the worker), and says whether it happened: a late write
from a worker already declared lost changes nothing. The three that every task goes through
(insert, claim, success) are in leek.hotpath, in plain SQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connections, models, router, transaction
from django.db.models import F
from django.utils import timezone

from leek import conf, serialize
from leek.conf import DEFAULT_POOL


class TaskStatus(models.TextChoices):
    """The life of a task; the values are those of Django's Tasks framework."""

    # Saved and waiting for a worker (or for its run_after).
    READY = "READY"
    # Claimed by a worker, which is running it.
    RUNNING = "RUNNING"
    # Ran to the end; return_value holds what it returned.
    SUCCESSFUL = "SUCCESSFUL"
    # Raised, could not be loaded, or lost its worker; the error fields say why.
    FAILED = "FAILED"


class Encoding(models.TextChoices):
    """How a row's payload and result are encoded."""

    # (callable, args, kwargs) pickled; `.offload()`.
    PICKLE = "pickle"
    # {"args": [...], "kwargs": {...}} as JSON, callable_path names a django.tasks Task;
    # the Django Tasks backend (leek.backend).
    JSON = "json"


class ControlAction(models.TextChoices):
    """What an operator last did to a task (leek.control)."""

    # Ran a FAILED task again.
    RETRY = "retry"
    # Stopped a READY task before it started.
    CANCEL = "cancel"
    # Asked the server holding a RUNNING task to kill its worker.
    TERMINATE = "terminate"


# The error class paths of the tasks an operator stopped.
CANCELLED = "leek.exceptions.Cancelled"
TERMINATED = "leek.exceptions.Terminated"
# The class path a snooze is recorded with in a task's history.
SNOOZED = "leek.exceptions.Snooze"

# Seconds unclaim waits for a row lock before it gives up (and is tried again later).
UNCLAIM_LOCK_TIMEOUT = 2


class UniqueUntil(models.TextChoices):
    """How long a task's unique_key keeps another offload with the same key from saving."""

    # While it is READY: once it starts, the same call may be queued again.
    START = "start"
    # While it is READY or RUNNING.
    END = "end"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One run of a task: when, on which worker, and how it ended ("" when it succeeded)."""

    started_at: datetime | None
    finished_at: datetime | None
    # "host:pid" of the worker process.
    worker: str
    exception_class_path: str = ""
    traceback: str = ""

    def to_json(self) -> dict[str, Any]:
        """Return the attempt as a `Task.history` entry."""
        return {
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "worker": self.worker,
            "exception_class_path": self.exception_class_path,
            "traceback": self.traceback,
        }

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> Attempt:
        """Read a `Task.history` entry."""
        return cls(
            started_at=_datetime(entry.get("started_at")),
            finished_at=_datetime(entry.get("finished_at")),
            worker=entry.get("worker", ""),
            exception_class_path=entry.get("exception_class_path", ""),
            traceback=entry.get("traceback", ""),
        )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _datetime(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True, slots=True)
class Claim:
    """Whose a RUNNING row is: a worker `pid` on `host`, at attempt `attempt`.

    Every write that ends an attempt names the claim it ends, and changes nothing when the
    row has moved on. The attempt is the fencing token: a worker on a server that was cut
    off, whose task another server settled and a worker on another host (which may have the
    same pid) claimed again, cannot overwrite that new attempt with its late outcome
    (issue 13). An attempt of 0 matches any (a claim read back from the row itself).
    """

    pid: int
    host: str
    attempt: int = 0

    def of(self, rows: models.QuerySet, task_id: int) -> models.QuerySet:
        """Return the row `task_id` among `rows` if it is still RUNNING under this claim."""
        mine = rows.filter(
            id=task_id, status=TaskStatus.RUNNING, worker_pid=self.pid, worker_host=self.host
        )
        return mine.filter(attempts=self.attempt) if self.attempt else mine


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
        now = timezone.now()
        return self._end_attempt(
            task_id,
            claim,
            now,
            exception_class_path,
            traceback,
            status=TaskStatus.READY,
            run_after=now + timedelta(seconds=delay),
            exception_class_path=exception_class_path,
            traceback=traceback,
        )

    def snooze(self, task_id: int, claim: Claim, delay: float, text: str) -> bool:
        """Make a task that raised Snooze under `claim` READY again in `delay` s.

        Its attempt is given back, so it spends no retry; the snooze is in `history`, and
        the row's error fields keep what they held.
        """
        now = timezone.now()
        return self._end_attempt(
            task_id,
            claim,
            now,
            SNOOZED,
            text,
            status=TaskStatus.READY,
            run_after=now + timedelta(seconds=delay),
            attempts=F("attempts") - 1,
        )

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
        rows = rows.exclude(pool__in=PoolPause.objects.values("pool"))
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


class Task(models.Model):
    """One offloaded call and what became of it."""

    pool = models.CharField(max_length=100, default=DEFAULT_POOL)
    callable_path = models.CharField(max_length=255)
    payload = models.BinaryField(help_text="The call: pickled, or JSON (see encoding).")
    encoding = models.CharField(
        max_length=8,
        choices=Encoding.choices,
        default=Encoding.PICKLE,
        help_text="How payload and result are encoded.",
    )
    priority = models.IntegerField(default=0, help_text="Higher runs first, then FIFO.")
    status = models.CharField(max_length=10, choices=TaskStatus.choices, default=TaskStatus.READY)
    run_after = models.DateTimeField(default=timezone.now, help_text="Not before this time.")
    attempts = models.PositiveIntegerField(default=0)
    timeout = models.FloatField(
        null=True, blank=True, help_text="Seconds it may run; empty: the server's default."
    )
    retries = models.PositiveIntegerField(
        default=0, help_text="How often a task that raised runs again."
    )
    retry_backoff = models.FloatField(
        default=1.0, help_text="Seconds before the first retry; doubled each time."
    )
    lost_retries = models.PositiveIntegerField(
        default=0, help_text="How often a task whose worker died runs again."
    )
    enqueued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker_host = models.CharField(max_length=255, blank=True)
    worker_pid = models.IntegerField(null=True, blank=True)
    result = models.BinaryField(
        null=True, blank=True, help_text="The return value, encoded as the payload is."
    )
    exception_class_path = models.CharField(max_length=255, blank=True)
    traceback = models.TextField(blank=True)
    # The attempts before the current one that ended, oldest first (Attempt.to_json()).
    history = models.JSONField(default=list, blank=True)
    # What an operator last did to the task, who (a user name) and when (leek.control).
    control_action = models.CharField(max_length=10, choices=ControlAction.choices, blank=True)
    control_by = models.CharField(max_length=150, blank=True)
    control_at = models.DateTimeField(null=True, blank=True)
    # At most one task holds a unique key at a time (leek.unique): the key is unique_key
    # while the row is READY (or RUNNING, for unique_until END), NULL otherwise, so that the
    # database refuses a second holder with a plain unique index, on every vendor.
    unique_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001 - NULL: none
    # A plain task's INSERT leaves it out (leek.hotpath): the database writes the default.
    unique_until = models.CharField(
        max_length=5,
        choices=UniqueUntil.choices,
        default=UniqueUntil.START,
        db_default=UniqueUntil.START,
    )
    unique_hold = models.GeneratedField(
        expression=models.Case(
            models.When(
                models.Q(status=TaskStatus.READY)
                | models.Q(status=TaskStatus.RUNNING, unique_until=UniqueUntil.END),
                then=F("unique_key"),
            ),
            default=None,
        ),
        output_field=models.CharField(max_length=255, null=True),
        db_persist=True,
    )
    # The concurrency and rate limits it starts under (leek.throttle): at most
    # max_concurrency RUNNING tasks of its limit_key, and two starts of the key at least
    # rate_interval seconds apart. NULL limit_key: no limit, the plain claim.
    limit_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001 - NULL: none
    max_concurrency = models.PositiveIntegerField(null=True, blank=True)
    rate_interval = models.FloatField(null=True, blank=True)

    objects = TaskQuerySet.as_manager()

    class Meta:
        # Partial indexes, of READY rows only: a row enters them when saved and leaves them
        # when claimed, so recording its outcome touches no index at all.
        indexes = [
            # The sweep's query: READY rows by priority, oldest first.
            models.Index(
                fields=["-priority", "id"],
                condition=models.Q(status=TaskStatus.READY),
                name="leek_task_ready_idx",
            ),
            # The sweep's "when is the next delayed task due".
            models.Index(
                fields=["run_after"],
                condition=models.Q(status=TaskStatus.READY),
                name="leek_task_ready_at_idx",
            ),
            # The admin's filters, each with the list's order (newest first) behind it, so
            # that a page of a filtered list of millions reads a few index entries. The
            # status filter: one partial index per status but SUCCESSFUL, the bulk of the
            # table, which the primary key serves; a finished success leaves no entry.
            models.Index(
                fields=["id"],
                condition=models.Q(status=TaskStatus.READY),
                name="leek_task_ready_id_idx",
            ),
            models.Index(
                fields=["id"],
                condition=models.Q(status=TaskStatus.RUNNING),
                name="leek_task_running_idx",
            ),
            models.Index(
                fields=["id"],
                condition=models.Q(status=TaskStatus.FAILED),
                name="leek_task_failed_idx",
            ),
            models.Index(fields=["pool", "id"], name="leek_task_pool_idx"),
            models.Index(fields=["callable_path", "id"], name="leek_task_callable_idx"),
            models.Index(fields=["enqueued_at"], name="leek_task_enqueued_idx"),
            # The limits' sweep (READY rows under limits, in dispatch order) and claim (the
            # READY rows of a key before one, and how many of a key run); rows without a
            # limit are in none of them.
            models.Index(
                fields=["-priority", "id"],
                condition=models.Q(status=TaskStatus.READY, limit_key__isnull=False),
                name="leek_task_limited_order_idx",
            ),
            models.Index(
                fields=["limit_key", "-priority", "id"],
                condition=models.Q(status=TaskStatus.READY, limit_key__isnull=False),
                name="leek_task_limited_ready_idx",
            ),
            models.Index(
                fields=["limit_key"],
                condition=models.Q(status=TaskStatus.RUNNING, limit_key__isnull=False),
                name="leek_task_limited_running_idx",
            ),
        ]
        constraints = [
            # MariaDB and MySQL have no partial indexes: migration 0008 builds a plain unique
            # index there (NULLs never collide), which is what this one means.
            models.UniqueConstraint(
                fields=["unique_hold"],
                condition=models.Q(unique_hold__isnull=False),
                name="leek_task_unique_hold",
            ),
        ]

    def __str__(self) -> str:
        return f"task {self.pk} {self.callable_path} ({self.status})"

    @property
    def is_finished(self) -> bool:
        """Tell whether the task has ended, successfully or not."""
        return self.status in (TaskStatus.SUCCESSFUL, TaskStatus.FAILED)

    @property
    def return_value(self) -> Any:
        """Return what the task returned (None until it is SUCCESSFUL)."""
        if self.encoding == Encoding.JSON:
            return None if self.result is None else serialize.loads_json(self.result)
        return serialize.loads_value(
            self.result, f"the return value of task {self.pk} {self.callable_path}"
        )

    @property
    def attempt_list(self) -> list[Attempt]:
        """Return every attempt that started, oldest first, the current one last."""
        done = [Attempt.from_json(entry) for entry in self.history]
        # A READY row's last attempt, if any, ended and is in history already.
        if self.started_at is None or self.status == TaskStatus.READY:
            return done
        failed = self.status == TaskStatus.FAILED
        current = Attempt(
            started_at=self.started_at,
            finished_at=self.finished_at,
            worker=f"{self.worker_host}:{self.worker_pid}",
            exception_class_path=self.exception_class_path if failed else "",
            traceback=self.traceback if failed else "",
        )
        return [*done, current]

    @property
    def exception_message(self) -> str:
        """Return the last line of the traceback: the error's class and message."""
        lines = self.traceback.strip().splitlines()
        return lines[-1] if lines else ""


class Server(models.Model):
    """One run of `manage.py leek`: where it listens, its workers, its last heartbeat.

    Written by the server itself, off its loop (leek.server.heartbeat); read by `manage.py
    leek status`, the admin and other servers. A server that stops cleanly sets stopped_at;
    one whose heartbeat is older than LEEK["server_lease"] is stale (killed, or cut off).
    """

    host = models.CharField(max_length=255)
    pid = models.IntegerField()
    # "host:port" it listens on; "" in burst mode.
    address = models.CharField(max_length=300, blank=True)
    # The pools it serves; empty: every pool.
    pools = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now)
    stopped_at = models.DateTimeField(null=True, blank=True)
    # One dict per worker: pid, state, generation, task, callable, task_since, running_for,
    # queued, tasks_done, rss_mb.
    workers = models.JSONField(default=list, blank=True)
    # Tasks ended by outcome ("done", "failed", ...) and workers replaced by cause.
    counts = models.JSONField(default=dict, blank=True)
    restarts = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"server {self.host}:{self.pid}"

    def is_stale(self, lease_seconds: float, now: datetime | None = None) -> bool:
        """Tell whether it runs (no stopped_at) but has not beaten for `lease_seconds`."""
        if self.stopped_at is not None:
            return False
        now = now or timezone.now()
        return self.heartbeat_at < now - timedelta(seconds=lease_seconds)

    @property
    def is_live(self) -> bool:
        """Tell whether it runs and beat within LEEK["server_lease"]."""
        return self.stopped_at is None and not self.is_stale(conf.get().server_lease)


class TaskLimit(models.Model):
    """The shared state of one limit key, locked by each claim of its tasks (leek.throttle)."""

    key = models.CharField(max_length=255, unique=True)
    # No task of this key starts before this time (its rate spaces the starts).
    next_start_at = models.DateTimeField(null=True, blank=True, db_index=True)

    def __str__(self) -> str:
        return f"limit {self.key}"


class PoolPause(models.Model):
    """A paused pool: no server starts its tasks until it is resumed (leek.control)."""

    pool = models.CharField(max_length=100, unique=True)
    paused_at = models.DateTimeField(default=timezone.now)
    paused_by = models.CharField(max_length=150, blank=True)

    def __str__(self) -> str:
        return f"pool {self.pool} paused by {self.paused_by or '?'}"


# The periodic tasks' tables live in their own module; imported here so that they are the
# app's models like the others.
from leek.schedule_models import Schedule, ScheduleRun, ScheduleSource, SlotSkip  # noqa: E402, F401
