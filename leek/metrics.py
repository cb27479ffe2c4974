"""Prometheus text exposition of the task table and of the servers' rows.

Runs in the web process, for leek.views.metrics. Reads the database only (never a worker):
READY, RUNNING and FAILED tasks by pool, the READY backlog per pool and its oldest age, run
times per callable over the latest tasks, and from the servers' heartbeat rows their workers
by state, their counters and how many are live. Every query reads an index range or the
latest rows, never the whole table.

Names follow Prometheus's conventions: the unit in the name (`_seconds`), `_total` only on
counters (values that only grow while a server runs), none on gauges of what is there now.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from django.db.models import Count, Max
from django.utils import timezone

from leek import control
from leek.models import Task, TaskStatus

# Run times come from at most this many of the latest tasks (one range of the primary key).
RUN_TIME_SAMPLE = 10_000
# Upper bounds, in seconds, of the run-time histogram's buckets.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_FINISHED = (TaskStatus.SUCCESSFUL, TaskStatus.FAILED)


@dataclass
class Family:
    """One metric: its name, type, help, and samples (suffix, labels, value)."""

    name: str
    kind: str
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: str) -> None:
        """Add a sample."""
        self.samples.append((suffix, labels, value))

    def lines(self) -> Iterator[str]:
        """Yield the family's lines of the text format."""
        yield f"# HELP {self.name} {_escape_help(self.help)}"
        yield f"# TYPE {self.name} {self.kind}"
        for suffix, labels, value in self.samples:
            yield f"{self.name}{suffix}{_labels(labels)} {_number(value)}"


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    escaped = (
        str(value).replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")
        for value in labels.values()
    )
    return "{" + ",".join(f'{k}="{v}"' for k, v in zip(labels, escaped, strict=True)) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


def render(families: Iterable[Family]) -> str:
    """Return the families in Prometheus's text format."""
    return "".join(line + "\n" for family in families for line in family.lines())


def collect() -> list[Family]:
    """Read the table and the servers' rows into metric families."""
    return [*_tasks(), _run_times(), *_servers()]


def _tasks() -> list[Family]:
    tasks = Family(
        "leek_tasks",
        "gauge",
        "READY, RUNNING and FAILED tasks in the table now, by pool (rows, not events; "
        "SUCCESSFUL ones are not counted: see leek_server_tasks_total).",
    )
    # One query per status, each read from that status's partial index: a count of the
    # SUCCESSFUL rows, the bulk of a big table, would read all of it (issue 11).
    for status in (TaskStatus.READY, TaskStatus.RUNNING, TaskStatus.FAILED):
        counted = Task.objects.filter(status=status).values("pool").annotate(n=Count("id"))
        for row in counted.order_by("pool"):
            tasks.add(row["n"], status=status, pool=row["pool"])
    ready = Family("leek_ready_tasks", "gauge", "READY tasks of each pool, due or not.")
    oldest = Family(
        "leek_oldest_ready_age_seconds",
        "gauge",
        "Seconds the longest-waiting due READY task of each pool has been due (0: none is due).",
    )
    paused = Family("leek_pool_paused", "gauge", "1 for each pool an operator paused.")
    now = timezone.now()
    for pool, count, since in control.backlog():
        ready.add(count, pool=pool)
        oldest.add((now - since).total_seconds() if since else 0.0, pool=pool)
    for pool in sorted(control.paused_pools()):
        paused.add(1, pool=pool)
    return [tasks, ready, oldest, paused]


def _run_times() -> Family:
    histogram = Family(
        "leek_task_run_seconds",
        "histogram",
        f"Run time of the latest attempt of each finished task, per callable, over the latest "
        f"{RUN_TIME_SAMPLE} tasks (a window: read it with histogram_quantile, without rate).",
    )
    last = Task.objects.aggregate(last=Max("id"))["last"]
    if last is None:
        return histogram
    # One range of the primary key; the rest is sorted out here, so that no planner prefers
    # the status index and reads every finished row.
    rows = Task.objects.filter(id__gt=last - RUN_TIME_SAMPLE).values_list(
        "callable_path", "status", "started_at", "finished_at"
    )
    runs: dict[str, list[float]] = {}
    for path, status, started, finished in rows.iterator():
        if status in _FINISHED and started is not None and finished is not None:
            runs.setdefault(path, []).append(max((finished - started).total_seconds(), 0.0))
    for path in sorted(runs):
        seconds = runs[path]
        for bound in BUCKETS:
            histogram.add(
                sum(1 for s in seconds if s <= bound),
                "_bucket",
                callable=path,
                le=repr(float(bound)),
            )
        histogram.add(len(seconds), "_bucket", callable=path, le="+Inf")
        histogram.add(sum(seconds), "_sum", callable=path)
        histogram.add(len(seconds), "_count", callable=path)
    return histogram


def _servers() -> list[Family]:
    servers = Family(
        "leek_servers", "gauge", "Servers that report in, by state (live, or stale: no beat)."
    )
    workers = Family("leek_workers", "gauge", "Worker processes of the live servers, by state.")
    finished = Family(
        "leek_server_tasks_total",
        "counter",
        "Tasks the server's workers ended, by outcome, since the server started.",
    )
    restarts = Family(
        "leek_worker_restarts_total",
        "counter",
        "Workers the server replaced, by cause, since it started.",
    )
    beat = Family(
        "leek_server_heartbeat_age_seconds", "gauge", "Seconds since the server's last beat."
    )
    states: Counter[str] = Counter({"live": 0, "stale": 0})
    now = timezone.now()
    for server in control.servers():
        if server.stopped_at is not None:
            continue
        stale = server.stale
        states["stale" if stale else "live"] += 1
        name = f"{server.host}:{server.pid}"
        beat.add((now - server.heartbeat_at).total_seconds(), server=name)
        if stale:
            continue
        by_state = Counter(str(w.get("state", "unknown")) for w in server.workers)
        for state, count in sorted(by_state.items()):
            workers.add(count, server=name, state=state)
        for outcome, count in sorted(server.counts.items()):
            finished.add(count, server=name, outcome=outcome)
        for cause, count in sorted(server.restarts.items()):
            restarts.add(count, server=name, cause=cause)
    for state, count in sorted(states.items()):
        servers.add(count, state=state)
    return [servers, workers, finished, restarts, beat]
