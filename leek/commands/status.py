"""`manage.py leek status`: the servers, their workers, the backlog, the periodic tasks; an
exit code to trust.

Runs in the shell (or the health check) that calls it; reads the table only, never a worker.
Exit code 0 when at least one server is live and, with --max-age, no due READY task of a
pool that is not paused has waited longer; otherwise NO_SERVER or BACKLOG_TOO_OLD, with one
line on stderr saying why.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from leek import control
from leek.models import Server

# Exit codes.
NO_SERVER = 1
BACKLOG_TOO_OLD = 2


def add_arguments(parser: CommandParser) -> None:
    """Declare the options of `status`."""
    parser.add_argument("--json", action="store_true", help="print JSON, for scripts")
    parser.add_argument(
        "--max-age",
        type=float,
        metavar="SECONDS",
        help="fail when a due READY task has waited longer than this",
    )


def run(command: BaseCommand, options: dict[str, Any]) -> None:
    """Print the state; raise CommandError (with its exit code) when it is not healthy."""
    now = timezone.now()
    servers = control.servers()
    backlog = control.backlog()
    paused = control.paused_pools()
    problem = _problem(servers, backlog, paused, options.get("max_age"), now)
    schedules = control.schedule_states()
    if options["json"]:
        found = _as_json(servers, backlog, paused, problem, now)
        found["schedules"] = [_schedule_json(state) for state in schedules]
        command.stdout.write(json.dumps(found))
    else:
        for line in _lines(servers, backlog, paused, now) + _schedule_lines(schedules, now):
            command.stdout.write(line)
    if problem is not None:
        code, why = problem
        raise CommandError(why, returncode=code)


def _problem(
    servers: list[Server],
    backlog: list[control.PoolBacklog],
    paused: set[str],
    max_age: float | None,
    now: datetime,
) -> tuple[int, str] | None:
    if not any(s.is_live for s in servers):
        stale = [s for s in servers if s.stale]
        if stale:
            last = max(s.heartbeat_at for s in stale)
            return NO_SERVER, (
                f"no live leek server: the last heartbeat was {_ago(last, now)} ago "
                f"({len(stale)} stale)"
            )
        stopped = [s.stopped_at for s in servers if s.stopped_at]
        if stopped:
            return (
                NO_SERVER,
                f"no live leek server: the last one stopped {_ago(max(stopped), now)} ago",
            )
        return NO_SERVER, "no live leek server: none has reported (is `manage.py leek` running?)"
    if max_age is None:
        return None
    for pool in backlog:
        if pool.pool in paused or pool.oldest is None:
            continue
        waited = (now - pool.oldest).total_seconds()
        if waited > max_age:
            return BACKLOG_TOO_OLD, (
                f"pool {pool.pool}: a READY task has waited {waited:.0f} s, more than "
                f"--max-age {max_age:g} s ({pool.ready} READY)"
            )
    return None


def _lines(
    servers: list[Server], backlog: list[control.PoolBacklog], paused: set[str], now: datetime
) -> list[str]:
    lines = []
    for server in servers:
        where = f"on {server.address}" if server.address else "in burst mode"
        state = "stopped" if server.stopped_at else ("STALE" if server.stale else "live")
        lines.append(
            f"server {server.host}:{server.pid} {where}, pools "
            f"{', '.join(server.pools) or 'all'}: {state}, up since "
            f"{server.started_at:%Y-%m-%d %H:%M:%S}, "
            f"last beat {_ago(server.heartbeat_at, now)} ago"
        )
        for worker in server.workers if not server.stopped_at else ():
            task = ""
            if worker.get("task") is not None:
                task = f": task {worker['task']} {worker['callable']}"
                if worker.get("task_since"):
                    since = datetime.fromisoformat(worker["task_since"])
                    task += f" for {_ago(since, now)}"
            lines.append(
                f"  worker {worker['pid']} {worker['state']}{task}, "
                f"{worker['rss_mb']} MB, {worker['tasks_done']} done"
            )
    if not servers:
        lines.append("no server has reported")
    for pool in backlog:
        oldest = "none due" if pool.oldest is None else f"oldest {_ago(pool.oldest, now)}"
        mark = " (paused)" if pool.pool in paused else ""
        lines.append(f"pool {pool.pool}{mark}: {pool.ready} READY, {oldest}")
    for name in sorted(paused - {pool.pool for pool in backlog}):
        lines.append(f"pool {name} (paused): 0 READY")
    return lines


def _as_json(
    servers: list[Server],
    backlog: list[control.PoolBacklog],
    paused: set[str],
    problem: tuple[int, str] | None,
    now: datetime,
) -> dict[str, Any]:
    return {
        "ok": problem is None,
        "problem": None if problem is None else problem[1],
        "servers": [
            {
                "host": s.host,
                "pid": s.pid,
                "address": s.address,
                "pools": s.pools,
                "started_at": s.started_at.isoformat(),
                "heartbeat_at": s.heartbeat_at.isoformat(),
                "stopped_at": s.stopped_at and s.stopped_at.isoformat(),
                "live": s.is_live,
                "stale": s.stale,
                "workers": s.workers,
                "counts": s.counts,
                "restarts": s.restarts,
            }
            for s in servers
        ],
        "backlog": [
            {
                "pool": b.pool,
                "ready": b.ready,
                "oldest_age": None if b.oldest is None else (now - b.oldest).total_seconds(),
                "paused": b.pool in paused,
            }
            for b in backlog
        ],
        "paused": sorted(paused),
    }


def _schedule_lines(states: list[control.ScheduleState], now: datetime) -> list[str]:
    lines = []
    for state in states:
        schedule = state.schedule
        switch = "enabled" if schedule.enabled else f"disabled by {schedule.changed_by or '?'}"
        if not schedule.declared:
            switch = "gone (no longer declared)"
        when = "-" if state.next_at is None else f"{state.next_at:%Y-%m-%d %H:%M:%S %Z}"
        last = "never run"
        if state.last_slot is not None:
            outcome = state.last_status or "deleted"
            last = (
                f"last run {_ago(state.last_slot, now)} ago, task {state.last_task_id} {outcome}"
            )
        lines.append(
            f"schedule {schedule.name} ({schedule.expression}) {schedule.callable_path}: "
            f"{switch}, next {when}, {last}"
        )
    return lines


def _schedule_json(state: control.ScheduleState) -> dict[str, Any]:
    schedule = state.schedule
    return {
        "name": schedule.name,
        "task": schedule.callable_path,
        "expression": schedule.expression,
        "enabled": schedule.enabled,
        "declared": schedule.declared,
        "next_at": state.next_at and state.next_at.isoformat(),
        "last_slot": state.last_slot and state.last_slot.isoformat(),
        "last_task": state.last_task_id,
        "last_status": state.last_status,
    }


def _ago(then: datetime, now: datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"
