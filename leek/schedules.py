"""Periodic tasks: what a schedule is, and which of its slots is due, as pure functions.

Imported by every process: the web process and the workers read declarations
(`@leek.task(cron=...)` and LEEK["schedules"]), the server's scheduler thread
(leek.server.scheduler) asks `decide()` what to do with a schedule now. Nothing here touches
the database or imports task code.

A slot is a moment a schedule fires. Crontab slots come from cronsim in the site's
TIME_ZONE; an `every` schedule's slots are whole multiples of its interval since the Unix
epoch, so that every server computes the same slot times. Each server enqueues at most the
latest due slot of a schedule: slots no server was up for are skipped (one record says so),
or with `catch_up` the latest of them runs once, never all of them.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError
from django.conf import settings as django_settings
from django.utils import timezone

# A slot enqueued up to this many seconds after its time is on time; later, it was missed
# (no server ran then), and is skipped unless the schedule catches up.
ON_TIME = 60.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The task options a schedule carries to its task rows (those of leek.api.TaskOptions).
OPTION_NAMES = ("pool", "priority", "timeout", "retries", "retry_backoff", "lost_retries")
# The keys of a LEEK["schedules"] entry.
ENTRY_KEYS = ("task", "cron", "every", "args", "kwargs", "catch_up", "overlap", *OPTION_NAMES)


class ScheduleError(ValueError):
    """A schedule is declared wrongly; the message names it."""


@dataclass(frozen=True, slots=True)
class Spec:
    """One schedule as declared: its task, when it fires, the call and the task options."""

    # Unique name: the task's dotted path in code, the key in LEEK["schedules"].
    name: str
    # Dotted path of a @leek.task function or of a django.tasks Task.
    task: str
    # A five-field crontab expression, or "" with `every` (seconds) instead.
    cron: str = ""
    every: float | None = None
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    # Run the latest missed slot once when a server is up again (else skip it).
    catch_up: bool = False
    # False: skip a slot while the previous run's task is READY or RUNNING.
    overlap: bool = True
    # Task options; those not given come from the task's declaration.
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"schedule {self.name!r}"
        if bool(self.cron) == (self.every is not None):
            raise ScheduleError(f'{where}: give either cron="..." or every=timedelta(...).')
        if self.cron:
            check_cron(self.cron, where)
        elif not (isinstance(self.every, int | float) and self.every > 0):
            raise ScheduleError(f"{where}: every={self.every!r} must be above 0 seconds.")
        unknown = sorted(set(self.options) - set(OPTION_NAMES))
        if unknown:
            raise ScheduleError(
                f"{where}: {unknown[0]!r} is not a task option; they are: "
                + ", ".join(OPTION_NAMES)
                + "."
            )

    @property
    def expression(self) -> str:
        """Return when it fires, as people read it: the crontab, or "every 300s"."""
        return self.cron or f"every {self.every:g}s"


def check_cron(expression: str, where: str = "schedule") -> None:
    """Raise ScheduleError unless `expression` is a five-field crontab cronsim can read."""
    if not isinstance(expression, str) or len(expression.split()) != 5:
        raise ScheduleError(
            f"{where}: cron={expression!r} is not a crontab expression of five fields "
            "(minute hour day-of-month month day-of-week), such as '*/5 * * * *'; for "
            "intervals under a minute use every=timedelta(seconds=...)."
        )
    try:
        next(CronSim(expression, datetime.now(UTC)))
    except CronSimError as exc:
        raise ScheduleError(f"{where}: cron={expression!r} is not valid: {exc}.") from exc
    except StopIteration as exc:
        raise ScheduleError(f"{where}: cron={expression!r} never fires.") from exc


def seconds(every: Any, where: str) -> float:
    """Read an interval: a timedelta, a number of seconds, or a duration text ("5m")."""
    if isinstance(every, timedelta):
        return every.total_seconds()
    if isinstance(every, int | float) and not isinstance(every, bool):
        return float(every)
    if isinstance(every, str):
        from leek.conf import parse_duration

        try:
            return parse_duration(every)
        except ValueError as exc:
            raise ScheduleError(f"{where}: every={exc}") from exc
    raise ScheduleError(f"{where}: every={every!r}; give a timedelta or a number of seconds.")


# -- declarations -------------------------------------------------------------------------

# The schedules declared in code, by name, as the task modules were imported.
_declared: dict[str, Spec] = {}


def declare(path: str, when: Mapping[str, Any]) -> Spec:
    """Record the schedule of a task declared `@leek.task(cron=... or every=...)`."""
    where = f"schedule of {path}"
    every = when.get("every")
    spec = Spec(
        name=path,
        task=path,
        cron=when.get("cron") or "",
        every=None if every is None else seconds(every, where),
        catch_up=bool(when.get("catch_up", False)),
        overlap=bool(when.get("overlap", True)),
    )
    _declared[path] = spec
    return spec


def declared() -> dict[str, Spec]:
    """Return the schedules declared in code so far, by name."""
    return dict(_declared)


def from_setting(raw: Any) -> tuple[Spec, ...]:
    """Read LEEK["schedules"] ({name: {"task": ..., "cron" or "every": ..., ...}})."""
    if isinstance(raw, tuple) and all(isinstance(s, Spec) for s in raw):
        return raw  # read already (Settings.replace)
    if not isinstance(raw, Mapping):
        raise ScheduleError("LEEK['schedules'] must be a dict of {name: entry}.")
    return tuple(_entry(name, entry) for name, entry in raw.items())


def _entry(name: Any, entry: Any) -> Spec:
    where = f"LEEK['schedules'][{name!r}]"
    if not isinstance(name, str) or not name or not isinstance(entry, Mapping):
        raise ScheduleError(f"{where}: give a non-empty name and a dict for each schedule.")
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    if unknown:
        raise ScheduleError(
            f"{where}: {unknown[0]!r} is not a key of a schedule; they are: "
            + ", ".join(ENTRY_KEYS)
            + "."
        )
    task = entry.get("task")
    if not isinstance(task, str) or not all(p.isidentifier() for p in task.split(".")):
        raise ScheduleError(f"{where}: 'task' must be a dotted path, like 'myapp.tasks.report'.")
    args, kwargs = entry.get("args", ()), entry.get("kwargs", {})
    if not isinstance(args, list | tuple) or not isinstance(kwargs, Mapping):
        raise ScheduleError(f"{where}: 'args' must be a list and 'kwargs' a dict.")
    _check_json(where, [list(args), dict(kwargs)])
    every = entry.get("every")
    try:
        return Spec(
            name=name,
            task=task,
            cron=entry.get("cron") or "",
            every=None if every is None else seconds(every, where),
            args=tuple(args),
            kwargs=dict(kwargs),
            catch_up=bool(entry.get("catch_up", False)),
            overlap=bool(entry.get("overlap", True)),
            options={k: entry[k] for k in OPTION_NAMES if k in entry},
        )
    except ScheduleError as exc:
        raise ScheduleError(str(exc).replace(f"schedule {name!r}", where)) from exc


def _check_json(where: str, value: Any) -> None:
    import json

    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ScheduleError(
            f"{where}: the arguments must be JSON (strings, numbers, lists, dicts): {exc}"
        ) from exc


# -- slots --------------------------------------------------------------------------------


def site_zone() -> ZoneInfo:
    """Return the time zone crontab expressions are read in: settings.TIME_ZONE."""
    return ZoneInfo(django_settings.TIME_ZONE or "UTC")


def aware(moment: datetime | None) -> datetime | None:
    """Return a datetime read from the database as an aware one (USE_TZ = False stores naive)."""
    if moment is None or timezone.is_aware(moment):
        return moment
    return timezone.make_aware(moment)


def latest_slot(spec: Spec, now: datetime, zone: tzinfo) -> datetime | None:
    """Return the latest slot at or before `now` (aware), in UTC; None if there is none."""
    if spec.every is not None:
        step = timedelta(seconds=spec.every)
        return EPOCH + step * ((now - EPOCH) // step)
    now = now.astimezone(UTC)  # compared in UTC: in one zone, a repeated hour's fold is not
    # cronsim reads backwards from a whole second, strictly before it.
    start = (now.replace(microsecond=0) + timedelta(seconds=1)).astimezone(zone)
    earlier = CronSim(spec.cron, start, reverse=True)
    found = next((c for c in itertools.islice(earlier, 1000) if c.astimezone(UTC) <= now), None)
    if found is None:
        return None
    # Its backward steps can land in the first pass of an autumn change's repeated hour
    # when the second pass has slots too: forward steps are exact, so walk on from there.
    for later in itertools.islice(CronSim(spec.cron, found), 1000):
        if later.astimezone(UTC) > now:
            break
        found = later
    # In UTC: two times of one zone compare by the wall clock, fold (which pass) ignored.
    return found.astimezone(UTC)


def next_slot(spec: Spec, now: datetime, zone: tzinfo) -> datetime | None:
    """Return the first slot after `now` (aware), in UTC; None if there is none."""
    if spec.every is not None:
        step = timedelta(seconds=spec.every)
        return EPOCH + step * ((now - EPOCH) // step + 1)
    # cronsim steps on the wall clock: in an autumn change's repeated hour it may first name
    # a time of the hour's first pass, before `now`.
    for found in itertools.islice(CronSim(spec.cron, now.astimezone(zone)), 1000):
        if found.astimezone(UTC) > now.astimezone(UTC):
            return found.astimezone(UTC)
    return None


class Action(enum.Enum):
    """What a server does with a schedule at a given moment."""

    # No slot since the last one dealt with.
    WAIT = "wait"
    # Enqueue the slot: it is on time, or it is the latest missed one and the schedule
    # catches up.
    RUN = "run"
    # Record the slot as missed, and run nothing.
    SKIP_MISSED = "missed"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do now, with which slot."""

    action: Action
    slot: datetime | None = None


def decide(
    spec: Spec, now: datetime, zone: tzinfo, last_slot: datetime | None, since: datetime
) -> Decision:
    """Say what to do with a schedule at `now`.

    `last_slot`: the latest slot dealt with (run or skipped); `since`: slots at or before
    it are never run (when the schedule was first recorded, or enabled again).
    """
    slot = latest_slot(spec, now, zone)
    baseline = since if last_slot is None else max(last_slot, since)
    if slot is None or slot <= baseline or slot > now:
        return Decision(Action.WAIT)
    if (now - slot).total_seconds() > ON_TIME:  # no server was up for it
        return Decision(Action.RUN if spec.catch_up else Action.SKIP_MISSED, slot)
    # The latest slot is on time, and so may be earlier ones that a slow round (a database
    # that paused, a busy machine) left behind: the earliest of those goes first, and the
    # caller asks again for the next.
    floor = max(baseline, now - timedelta(seconds=ON_TIME))
    first = next_slot(spec, floor, zone)
    return Decision(Action.RUN, first if first and baseline < first < slot else slot)


def seconds_to_next(spec: Spec, now: datetime, zone: tzinfo) -> float:
    """Return the seconds from `now` to the schedule's next slot (inf if none)."""
    found = next_slot(spec, now, zone)
    return math.inf if found is None else max(0.0, (found - now).total_seconds())
