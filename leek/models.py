"""The app's tables: tasks, servers, limit keys, paused pools (and schedules, in their module).

The task table is the single source of truth. Read and written by the web process (offload,
query), the server (sweep, recovery of lost tasks) and the workers (claim, record the
outcome). Its transitions are in leek.transitions (conditional UPDATEs) and leek.hotpath (the
insert, claim and success every task goes through, in plain SQL); the values its rows hold
in leek.states.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import models
from django.db.models import F
from django.utils import timezone

from leek import conf, serialize
from leek.conf import DEFAULT_POOL
from leek.states import Attempt, ControlAction, Encoding, TaskStatus, UniqueUntil
from leek.transitions import TaskQuerySet


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
