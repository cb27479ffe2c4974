"""The tables of periodic tasks: one row per schedule, one per slot dealt with.

Part of leek.models (imported there, so the app's models are one place to look). Written by
the workers at boot (the schedules they find declared, leek.schedule_records), by the
servers' scheduler threads (the slots, leek.server.scheduler) and by operators (enable,
disable: leek.control); read by the admin and `manage.py leek status`.
"""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.utils import timezone

from leek import schedules
from leek.conf import DEFAULT_POOL


class ScheduleSource(models.TextChoices):
    """Where a schedule is declared."""

    # @leek.task(cron=...) or @leek.task(every=...).
    CODE = "code"
    # An entry of LEEK["schedules"].
    SETTINGS = "settings"


class SlotSkip(models.TextChoices):
    """Why a slot ran no task ("" when it did)."""

    # No server was up at its time (and the schedule does not catch up).
    MISSED = "missed"
    # The previous run's task was still READY or RUNNING (overlap=False).
    OVERLAP = "overlap"


class Schedule(models.Model):
    """A periodic task: when it fires, the call, the task options, and its switch."""

    name = models.CharField(max_length=200, unique=True)
    source = models.CharField(max_length=8, choices=ScheduleSource.choices)
    callable_path = models.CharField(max_length=255)
    cron = models.CharField(max_length=120, blank=True, help_text="Crontab, in TIME_ZONE.")
    every = models.FloatField(null=True, blank=True, help_text="Seconds between slots.")
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    pool = models.CharField(max_length=100, default=DEFAULT_POOL)
    priority = models.IntegerField(default=0)
    timeout = models.FloatField(null=True, blank=True)
    retries = models.PositiveIntegerField(default=0)
    retry_backoff = models.FloatField(default=1.0)
    lost_retries = models.PositiveIntegerField(default=0)
    catch_up = models.BooleanField(
        default=False, help_text="Run the latest missed slot once when a server is back."
    )
    overlap = models.BooleanField(
        default=True, help_text="Run a slot even while the previous run is not finished."
    )
    # Still declared by the code or settings the workers last booted with; a schedule no
    # longer declared keeps its row and history, and does not run.
    declared = models.BooleanField(default=True)
    recorded_at = models.DateTimeField(default=timezone.now)
    # When the worker generation that last wrote the declaration started (its server's
    # start, or the reload that made it): workers of an older generation leave the row
    # alone, so that during a rolling deploy the newest code's schedules hold.
    declared_by = models.DateTimeField(null=True, blank=True)
    # The operators' switch (leek.control), kept across restarts and deploys.
    enabled = models.BooleanField(default=True)
    changed_by = models.CharField(max_length=150, blank=True)
    changed_at = models.DateTimeField(null=True, blank=True)
    # Slots at or before this never run: when the schedule was first recorded or enabled.
    since = models.DateTimeField(default=timezone.now)
    # The latest slot dealt with (run or skipped).
    last_slot = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"schedule {self.name}"

    @property
    def expression(self) -> str:
        """Return when it fires: the crontab, or "every 300s"."""
        return self.cron or f"every {self.every:g}s"

    @property
    def spec(self) -> schedules.Spec:
        """Return the schedule as leek.schedules reads it (ScheduleError if it is nonsense)."""
        return schedules.Spec(
            name=self.name, task=self.callable_path, cron=self.cron, every=self.every,
            catch_up=self.catch_up, overlap=self.overlap,
        )  # fmt: skip

    def next_at(self, now: datetime | None = None) -> datetime | None:
        """Return its next slot in TIME_ZONE (None: disabled, no longer declared, or never)."""
        if not (self.enabled and self.declared):
            return None
        zone = schedules.site_zone()
        try:
            found = schedules.next_slot(self.spec, schedules.aware(now or timezone.now()), zone)
        except schedules.ScheduleError:  # a row edited by hand into nonsense
            return None
        return None if found is None else found.astimezone(zone)


class ScheduleRun(models.Model):
    """One slot of a schedule, taken by exactly one server: the task it enqueued, or a skip.

    The unique (schedule, slot) is the whole guard of "one run per slot": whichever server
    inserts it first (with its task row, in one transaction) runs the slot; the others get
    an IntegrityError and leave it.
    """

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="runs")
    slot = models.DateTimeField()
    # The task row it enqueued (no foreign key: the retention purge deletes task rows and
    # must not have to touch this table); None when the slot was skipped.
    task_id = models.BigIntegerField(null=True, blank=True)
    skipped = models.CharField(max_length=8, choices=SlotSkip.choices, blank=True)
    # "host:pid" of the server that took the slot.
    server = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-slot"]
        constraints = [
            models.UniqueConstraint(fields=["schedule", "slot"], name="leek_schedule_slot_once")
        ]

    def __str__(self) -> str:
        return f"{self.schedule_id} at {self.slot.isoformat()}"
