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

This module is the command line, run by the benchmark process: it parses the options, runs
the phases in order, prints the report and removes what it made. The work is done beside it:

    project.py      the throwaway project: settings, benchapp, its database
    live_server.py  start, wait for and stop a `python -m django leek` server, by pid
    memory.py       the RSS of a server and its workers
    floors.py       ORM insert, multiprocessing.Queue, TCP round trip
    measure.py      offloads, batches end to end, latency, the backlog
    verify.py       wait for a batch; no task lost or run twice, one row per write_row
    report.py       the ratios, the table and the backlog lines
    common.py       the sizes, the two errors, the progress line
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path

from common import BenchError, Sizes, VerificationError, progress
from floors import measure_floors
from measure import measure_backlog, run_pool
from project import database_settings, free_port, pg_admin, setup_django, write_project
from report import add_ratios, format_backlog, format_table


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
