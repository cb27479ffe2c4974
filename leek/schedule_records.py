"""Write the schedules a worker finds declared into the table, where the servers read them.

Runs in each worker process at boot, after leek.discovery imported the task modules: the
server process never imports task code, so the workers tell it, through the database, which
`@leek.task(cron=...)`/`every=` schedules the code declares, and with which task options;
LEEK["schedules"] entries are written the same way, with the options of the task they name.
A schedule is found by its name and only written when something changed; one no longer
declared is marked so (`declared=False`), never deleted: its history stays, and so does the
operators' switch if it comes back.

Servers of two releases may share the database during a rolling deploy. Each write is
stamped with when the writing worker's generation started (`Schedule.declared_by`: the
server's start, or the SIGHUP that loaded its code; on the database's clock), and a worker
leaves alone a row that a newer generation wrote: an old server's worker that restarts
neither takes back a schedule the new code removed nor marks gone one it added.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, IntegrityError, router, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.module_loading import import_string

from leek import conf, dbclock, schedules
from leek.api import ConfiguredTask, TaskOptions
from leek.models import Schedule, ScheduleSource

logger = logging.getLogger("leek.pool")


def record_declared(generation_at: datetime | None = None) -> None:
    """Write every declared schedule; a database error is logged, a bad declaration raised.

    `generation_at`: when this worker's generation started (None: write whatever is there).
    """
    wanted = _wanted()
    try:
        _write(wanted, generation_at)
    except DatabaseError as exc:
        logger.error("cannot record the periodic tasks' schedules (the next boot tries): %s", exc)


def _wanted() -> dict[str, dict[str, Any]]:
    """Return the values of each declared schedule's row, by name."""
    in_code = schedules.declared()
    found: dict[str, dict[str, Any]] = {}
    for spec in conf.get().schedules:
        if spec.name in in_code:
            raise ImproperlyConfigured(
                f"LEEK['schedules'][{spec.name!r}] has the name of the schedule declared on "
                f"the task {spec.name}; give the entry another name."
            )
        found[spec.name] = _values(spec, ScheduleSource.SETTINGS)
    for spec in in_code.values():
        found[spec.name] = _values(spec, ScheduleSource.CODE)
    return found


def _values(spec: schedules.Spec, source: str) -> dict[str, Any]:
    where = f"schedule {spec.name!r}"
    options = {**task_options(spec.task, where), **spec.options}
    try:
        TaskOptions(**options)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"{where}: {exc}") from exc
    return {
        "source": source,
        "callable_path": spec.task,
        "cron": spec.cron,
        "every": spec.every,
        "args": list(spec.args),
        "kwargs": dict(spec.kwargs),
        "catch_up": spec.catch_up,
        "overlap": spec.overlap,
        "declared": True,
        **options,
    }


def task_options(path: str, where: str) -> dict[str, Any]:
    """Return the task options declared with the task at `path` (a leek or Django task)."""
    try:
        found = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"{where}: the task {path} cannot be imported: {exc}") from exc
    declared = getattr(found, "leek", None)
    if isinstance(declared, ConfiguredTask):
        return {name: getattr(declared.options, name) for name in schedules.OPTION_NAMES}
    django_task = _django_task(found)
    if django_task is None:
        raise ImproperlyConfigured(
            f"{where}: {path} is neither a @leek.task function nor a django.tasks Task."
        )
    defaults = getattr(django_task.get_backend(), "defaults", None)
    options = {name: getattr(defaults, name, None) for name in schedules.OPTION_NAMES}
    options.update(pool=django_task.queue_name, priority=django_task.priority)
    for name in ("timeout", "retries", "retry_backoff", "lost_retries"):
        if getattr(django_task, name, None) is not None:  # leek's own, on LeekTask
            options[name] = getattr(django_task, name)
    return {k: v for k, v in options.items() if v is not None}


def _django_task(found: Any) -> Any:
    try:
        from leek.djtasks import Task
    except ImportError:  # neither django.tasks nor the backport
        return None
    return found if isinstance(found, Task) else None


def _write(wanted: dict[str, dict[str, Any]], generation_at: datetime | None) -> None:
    alias = router.db_for_write(Schedule)
    now = timezone.now()
    rows = Schedule.objects.using(alias)
    ours = rows  # the rows no newer generation wrote
    if generation_at is not None:
        # On the database's clock, as every server's stamp is: hosts' clocks differ.
        generation_at = dbclock.now(alias) - (now - generation_at)
        ours = rows.filter(Q(declared_by__isnull=True) | Q(declared_by__lte=generation_at))
    existing = {row.name: row for row in rows.all()}
    for name, values in wanted.items():
        row = existing.get(name)
        if row is None:
            try:
                with transaction.atomic(using=alias):
                    rows.create(
                        name=name, recorded_at=now, since=now, declared_by=generation_at, **values
                    )
                continue
            except IntegrityError:  # another worker recorded it just now
                row = rows.get(name=name)
        if any(getattr(row, key) != value for key, value in values.items()):
            # Back after it was gone: the slots meanwhile were not missed, it did not exist.
            since = {} if row.declared else {"since": now}
            stamp = {"recorded_at": now, "declared_by": generation_at, **since}
            if not ours.filter(pk=row.pk).update(**stamp, **values):
                logger.info("schedule %s: left as a newer generation's code declares it", name)
    gone = [name for name, row in existing.items() if row.declared and name not in wanted]
    if gone:
        marked = ours.filter(name__in=gone)
        names = sorted(marked.values_list("name", flat=True))
        marked.update(declared=False, recorded_at=now, declared_by=generation_at)
        if names:
            logger.info("schedules no longer declared: %s", ", ".join(names))
