"""Measure leek end to end against a real `manage.py leek` server, and the floors it sits on.

Run from the repository root, after `pip install -e .`:

    python benchmarks/throughput.py                 # SQLite, --workers 1, 2 and 4
    python benchmarks/throughput.py --quick         # 300 tasks, 2 workers: a fast check
    python benchmarks/throughput.py --db postgres   # PostgreSQL at 127.0.0.1:5432, user postgres
    python benchmarks/throughput.py --workers 2 --json results.json

It builds a throwaway Django project in a temporary directory (a `benchapp` with a `Row` model
and two tasks, `noop()` and `write_row(n)`, and `dt_noop()`, a django.tasks `@task` for
leek's Django Tasks backend), migrates it, starts `python -m django leek` as a
subprocess for each worker count, offloads tasks from this process, and verifies that every
task ended SUCCESSFUL exactly once (and that each `write_row` wrote exactly one row). Any loss
or double prints what went wrong and exits non-zero. Every process it starts is stopped by pid.
See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from common import BenchError, Sizes, VerificationError, progress
from floors import measure_floors
from live_server import Server, start_server, stop_server
from memory import MB, MemorySampler, memory_figures
from project import database_settings, free_port, pg_admin, setup_django, write_project
from report import add_ratios, format_backlog, format_table
from verify import verify_rows, verify_tasks, wait_successful

# --------------------------------------------------------------------------- measurements


def offload_batch(task: Any, count: int, first_n: int | None) -> tuple[list[int], float, float]:
    """Offload `count` tasks one by one; return their ids, start and end of the offloads."""
    ids = []
    start = time.perf_counter()
    if first_n is None:
        for _ in range(count):
            ids.append(task.offload().id)
    else:
        for n in range(first_n, first_n + count):
            ids.append(task.offload(n).id)
    return ids, start, time.perf_counter()


def measure_batch(server: Server, task: Any, count: int, first_n: int | None) -> dict:
    """Offload a batch, wait for it to end, verify it; return rates and peak memory."""
    with MemorySampler(server) as sampler:
        ids, start, offloaded = offload_batch(task, count, first_n)
        progress(f"  offloaded {count} in {offloaded - start:.2f} s; waiting")
        done = wait_successful(ids)
    elapsed = done - start
    return {
        "tasks": count,
        "offload_s": round(offloaded - start, 4),
        "offload_per_s": round(count / (offloaded - start), 1),
        "end_to_end_s": round(elapsed, 4),
        "end_to_end_per_s": round(count / elapsed, 1),
        "ids": ids,
        "peak": sampler.peak,
    }


def measure_offload(count: int, batch: int, rounds: int = 5) -> dict:
    """Offload to the live server into a pool it does not serve: the caller's cost alone.

    Each call saves its row and sends its notification (which the server reads and
    ignores); nothing else runs meanwhile. `.offload()` and `.enqueue()` through the Django
    Tasks backend take turns, `rounds` times each, so that both see the same machine. Then
    the same number through offload_many, in batches of `batch`. The rows are deleted
    afterwards.
    """
    from benchapp.tasks import dt_noop, noop

    from leek.models import Task

    aside = noop.using(pool="bench-offload-only")
    enqueued = dt_noop.using(queue_name="bench-offload-only")
    offload_s = enqueue_s = 0.0
    per_round = max(1, count // rounds)
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(per_round):
            aside.offload()
        offload_s += time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(per_round):
            enqueued.enqueue()
        enqueue_s += time.perf_counter() - start
    single = per_round * rounds / offload_s
    enqueue = per_round * rounds / enqueue_s
    bulk_count = max(count, 20 * batch)
    start = time.perf_counter()
    for _ in range(bulk_count // batch):
        aside.offload_many([()] * batch)
    bulk = bulk_count / (time.perf_counter() - start)
    saved = Task.objects.filter(pool="bench-offload-only")
    expected = 2 * per_round * rounds + bulk_count
    if saved.count() != expected:
        raise VerificationError(f"offload: {saved.count()} rows for {expected} calls")
    saved.delete()
    return {
        "single_per_s": round(single, 1),
        "enqueue_per_s": round(enqueue, 1),
        # What one .enqueue() costs the caller, in .offload()s.
        "enqueue_cost_vs_offload": round(single / enqueue, 3),
        "bulk_per_s": round(bulk, 1),
        "bulk_batch": batch,
        "bulk_tasks": bulk_count,
    }


def percentiles(values: list[float]) -> dict[str, float]:
    """Return p50, p95 and p99 of `values` in milliseconds."""
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50_ms": round(cuts[49] * 1000, 3),
        "p95_ms": round(cuts[94] * 1000, 3),
        "p99_ms": round(cuts[98] * 1000, 3),
    }


def measure_latency(samples: int) -> tuple[dict, list[int]]:
    """Offload noop one at a time to an idle pool; return latency percentiles and the ids."""
    from benchapp.tasks import noop

    from leek.models import Task

    to_start, to_done, to_seen, ids = [], [], [], []
    for _ in range(samples):
        time.sleep(0.01)  # let the worker go back to idle
        t0 = time.time()
        handle = noop.offload()
        row = Task.objects.filter(id=handle.id)
        deadline = time.monotonic() + 30
        while True:
            status, started, finished = row.values_list("status", "started_at", "finished_at")[0]
            if status == "SUCCESSFUL":
                seen = time.time()
                break
            if time.monotonic() > deadline:
                raise VerificationError(f"latency: task {handle.id} still {status} after 30 s")
            time.sleep(0.0005)
        ids.append(handle.id)
        to_start.append(started.timestamp() - t0)
        to_done.append(finished.timestamp() - t0)
        to_seen.append(seen - t0)
    figures = {
        "samples": samples,
        "to_started": percentiles(to_start),
        "to_successful": percentiles(to_done),
        "to_seen_by_caller": percentiles(to_seen),
    }
    return figures, ids


def run_pool(root: Path, port: int, workers: int, sizes: Sizes, row_base: int) -> dict:
    """Start a server with `workers` workers, measure it, verify, and stop it."""
    from benchapp.tasks import noop, write_row

    progress(f"workers={workers}: starting server")
    server = start_server(root, port, workers)
    try:
        progress(f"workers={workers}: ready ({server.banner.decode(errors='replace')})")
        idle = MemorySampler(server).sample()
        progress(f"workers={workers}: {sizes.tasks} offloads and enqueues, then offload_many")
        offload = measure_offload(sizes.tasks, batch=1000)
        progress(f"workers={workers}: {sizes.tasks} noop tasks")
        noops = measure_batch(server, noop, sizes.tasks, None)
        verify_tasks(noops.pop("ids"), f"workers={workers} noop")
        progress(f"workers={workers}: {sizes.tasks} write_row tasks")
        writes = measure_batch(server, write_row, sizes.tasks, row_base)
        verify_tasks(writes.pop("ids"), f"workers={workers} write_row")
        verify_rows(row_base, sizes.tasks, f"workers={workers} write_row")
        peaks = noops.pop("peak"), writes.pop("peak")
        peak = {pid: max(p.get(pid, 0) for p in peaks) for pid in idle}
        progress(f"workers={workers}: latency, {sizes.samples} samples")
        latency, ids = measure_latency(sizes.samples)
        verify_tasks(ids, f"workers={workers} latency")
        restarts = server.stats().get("restarts", {})
    finally:
        stop_server(server)
    return {
        "workers": workers,
        "offload": offload,
        "noop": noops,
        "write_row": writes,
        "latency": latency,
        "memory": memory_figures(server.proc.pid, idle, peak),
        "worker_restarts": restarts,
    }


def insert_ready(count: int) -> tuple[int, int]:
    """Save `count` READY noop rows without telling the server; return the first and last id."""
    from benchapp.tasks import noop
    from django.db import transaction
    from django.utils import timezone

    from leek import hotpath, serialize
    from leek.runner import database

    path = serialize.callable_path(noop)
    payload = serialize.dumps_call(noop, (), {})
    now = timezone.now()
    # In the order of hotpath.OFFLOAD_COLUMNS.
    row = ("default", path, payload, 0, now, now, None, 0, 1.0, 0, "pickle")
    ids: list[int] = []
    for start in range(0, count, 50_000):
        with transaction.atomic():
            ids += hotpath.insert(database(), [row] * min(50_000, count - start))
        progress(f"  {len(ids):,} READY rows saved")
    return ids[0], ids[-1]


def measure_backlog(root: Path, port: int, count: int, seconds: float, workers: int = 2) -> dict:
    """Start a server on `count` READY rows; return its memory and how soon urgent tasks start.

    The rows are saved while the server is down, so only the sweep can find them, a page
    at a time. For `seconds` the server drains them while a task of higher priority is
    offloaded every 0.25 s; the figure is how soon each of those starts. The server is then
    stopped, and every row must be SUCCESSFUL once or still READY.
    """
    from benchapp.tasks import noop
    from django.db.models import Count

    from leek.models import Task

    server = start_server(root, port, workers)
    try:
        idle = MemorySampler(server).sample()[server.proc.pid]
    finally:
        stop_server(server)
    progress(f"backlog: saving {count:,} READY rows with the server down")
    first, last = insert_ready(count)
    backlog = Task.objects.filter(id__gte=first, id__lte=last)
    server = start_server(root, port, workers, busy=True)
    urgent = noop.using(priority=10)
    waits, probes = [], []
    try:
        progress(f"backlog: draining for {seconds:g} s, an urgent task every 0.25 s")
        with MemorySampler(server) as sampler:
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                time.sleep(0.25)
                t0 = time.time()
                probes.append((t0, urgent.offload().id))
            wait_successful([i for _, i in probes])
            elapsed = time.perf_counter() - start
        done = backlog.filter(status="SUCCESSFUL").count()
    finally:
        stop_server(server)
    for t0, task_id in probes:
        started = Task.objects.values_list("started_at", flat=True).get(id=task_id)
        waits.append(started.timestamp() - t0)
    counts = dict(backlog.values_list("status").annotate(n=Count("id")).order_by())
    if set(counts) - {"SUCCESSFUL", "READY"} or backlog.exclude(attempts__lte=1).exists():
        raise VerificationError(f"backlog: rows ended {counts}, or ran more than once")
    verify_tasks([i for _, i in probes], "backlog urgent tasks")
    return {
        "rows": count,
        "workers": workers,
        "seconds": round(elapsed, 1),
        "drained": done,
        "drained_per_s": round(done / elapsed, 1),
        "server_idle_mb": round(idle / MB, 1),
        "server_peak_mb": round(sampler.peak[server.proc.pid] / MB, 1),
        "urgent_started": {**percentiles(waits), "max_ms": round(max(waits) * 1000, 3)},
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workers",
        nargs="+",
        metavar="N",
        help="worker counts to measure, e.g. `--workers 2` or `--workers 1,4` (default 1 2 4)",
    )
    parser.add_argument("--quick", action="store_true", help="300 tasks, 50 samples, 2 workers")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--json", metavar="FILE", help="write the results to FILE")
    parser.add_argument("--tasks", type=int, help="tasks a batch (default 2000, quick 300)")
    parser.add_argument("--samples", type=int, help="latency samples (default 200, quick 50)")
    parser.add_argument(
        "--backlog",
        type=int,
        metavar="ROWS",
        help="READY rows the server starts on (default 100000, quick 10000, 0: skip)",
    )
    parser.add_argument(
        "--backlog-seconds", type=float, default=None, help="how long it drains them (10 s)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary project")
    parser.add_argument(
        "--servers",
        metavar="N,N",
        help="measure several servers on one database instead (benchmarks/servers.py), "
        "e.g. `--db postgres --servers 1,2,3`",
    )
    args = parser.parse_args(argv)
    if args.workers:
        args.workers = [int(w) for item in args.workers for w in item.split(",") if w]
    else:
        args.workers = [2] if args.quick else [1, 2, 4]
    if any(w < 1 for w in args.workers):
        parser.error("--workers: give counts of 1 or more")
    return args


def sizes_for(args: argparse.Namespace) -> Sizes:
    """Return the sizes of the measurements for these options."""
    if args.quick:
        base = Sizes(300, 50, 300, 20_000, 50, backlog=10_000, backlog_seconds=3)
    else:
        base = Sizes(2000, 200, 2000, 100_000, 200, backlog=100_000, backlog_seconds=10)
    return Sizes(
        tasks=args.tasks or base.tasks,
        samples=args.samples or base.samples,
        inserts=base.inserts,
        queue_items=base.queue_items,
        tcp_samples=base.tcp_samples,
        backlog=base.backlog if args.backlog is None else args.backlog,
        backlog_seconds=args.backlog_seconds or base.backlog_seconds,
    )


def run(args: argparse.Namespace, root: Path, pg_name: str) -> dict:
    """Build the project, measure floors and every worker count; return the results."""
    import django

    port = free_port()
    write_project(root, database_settings(args.db, root, pg_name), port)
    if args.db == "postgres":
        pg_admin(f'CREATE DATABASE "{pg_name}"')
    setup_django(root)
    sizes = sizes_for(args)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "db": args.db,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "tasks": sizes.tasks,
        "samples": sizes.samples,
    }
    floors = measure_floors(sizes)
    progress(f"floors: {floors}")
    results = []
    for index, workers in enumerate(args.workers):
        result = run_pool(root, port, workers, sizes, row_base=(index + 1) * 1_000_000)
        add_ratios(result, floors)
        results.append(result)
    backlog = None
    if sizes.backlog:
        backlog = measure_backlog(root, port, sizes.backlog, sizes.backlog_seconds)
    return {
        "meta": meta,
        "floors": floors,
        "results": results,
        "backlog": backlog,
        "verified": True,
    }


def cleanup(args: argparse.Namespace, root: Path, pg_name: str) -> None:
    """Close connections, drop the PostgreSQL database, remove the project and its lock."""
    if "django" in sys.modules:
        from django.db import connections

        with suppress(Exception):  # noqa: BLE001 - settings may never have been configured
            connections.close_all()
    if args.db == "sqlite" and "leek.hotpath" in sys.modules:
        from leek import hotpath

        with suppress(OSError):  # the lock file leek's writers take turns on
            os.unlink(hotpath.turn_lock_path(str(root / "bench.sqlite3")))
    if args.db == "postgres":
        try:
            pg_admin(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        except BenchError as exc:
            progress(f"could not drop {pg_name}: {exc}")
    if args.keep:
        progress(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit code."""
    args = parse_args(argv)
    if args.servers:
        import servers  # benchmarks/servers.py, beside this file

        extra = ["--tasks", str(args.tasks)] if args.tasks else []
        workers = ["--workers", str(args.workers[0])] if len(args.workers) == 1 else []
        return servers.main(["--db", args.db, "--servers", args.servers, *workers, *extra])
    root = Path(tempfile.mkdtemp(prefix="leek-bench-"))
    pg_name = f"leek_bench_{secrets.token_hex(4)}"
    try:
        report = run(args, root, pg_name)
    except VerificationError as exc:
        print(f"VERIFICATION FAILED: {exc}", file=sys.stderr)
        return 1
    except BenchError as exc:
        print(f"benchmark could not run: {exc}", file=sys.stderr)
        return 2
    finally:
        cleanup(args, root, pg_name)
    print(format_table(report["meta"], report["floors"], report["results"]))
    if report["backlog"]:
        print(format_backlog(report["backlog"]))
    print("verified: every task SUCCESSFUL exactly once (attempts == 1), one row per write_row")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
        progress(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
