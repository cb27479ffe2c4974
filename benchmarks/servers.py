"""Measure how throughput grows with the number of leek servers on one database.

Run from the repository root, after `pip install -e .`:

    python benchmarks/servers.py --db postgres --servers 1,2,3
    python benchmarks/throughput.py --db postgres --servers 1,2,3   (the same)
    python benchmarks/servers.py --db sqlite --servers 1,2 --workers 1 --tasks 2000

For each count it starts that many `python -m django leek` servers (each with --workers
workers, on ports of their own) on one throwaway database, saves a batch of row-writing
tasks in one transaction (`offload_many`: the first server hears of them, the others find
them by their sweep), and times the drain until every task is SUCCESSFUL; then it checks
that each ran exactly once. The insert floor of the same database is measured in the same
run, so that each figure prints with its ratio to it. Every process it starts is stopped by
pid. The project, the server handling, the floor and the checks are those of
benchmarks/throughput.py (project.py, live_server.py, floors.py, verify.py).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path

from common import BenchError, VerificationError, progress
from floors import floor_insert
from live_server import Server, start_server, stop_server
from project import database_settings, free_port, pg_admin, setup_django, write_project
from throughput import cleanup
from verify import verify_rows, verify_tasks, wait_successful


def drain(task: object, count: int, first_n: int) -> float:
    """Save `count` tasks at once; return the seconds until the last one is SUCCESSFUL."""
    from django.db import transaction

    start = time.perf_counter()
    with transaction.atomic():
        handles = task.offload_many((n,) for n in range(first_n, first_n + count))
    ids = [h.id for h in handles]
    done = wait_successful(ids)
    verify_tasks(ids, f"{count} tasks")
    verify_rows(first_n, count, f"{count} tasks")
    return done - start


def run_servers(root: Path, port: int, servers: int, workers: int, count: int, base: int) -> dict:
    """Start `servers` servers, drain a batch through them, stop them; return the figures."""
    from benchapp import tasks

    started: list[Server] = []
    try:
        # The first on the port web processes notify; the others on ports of their own.
        for index in range(servers):
            started.append(start_server(root, port if index == 0 else free_port(), workers))
        progress(f"{servers} server(s) of {workers} worker(s) up; draining {count} tasks")
        drain(tasks.write_row, min(200, count), base)  # warm every worker and connection
        seconds = drain(tasks.write_row, count, base + 1000)
    finally:
        for server in started:
            stop_server(server)
    return {"servers": servers, "workers": workers, "tasks": count, "per_s": count / seconds}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--servers", default="1,2,3", help="server counts (default 1,2,3)")
    parser.add_argument("--workers", type=int, default=2, help="workers a server (default 2)")
    parser.add_argument("--tasks", type=int, default=3000, help="tasks a batch (default 3000)")
    args = parser.parse_args(argv)
    args.servers = [int(n) for n in args.servers.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit code."""
    args = parse_args(argv)
    args.keep = False
    root = Path(tempfile.mkdtemp(prefix="leek-bench-servers-"))
    pg_name = f"leek_bench_{secrets.token_hex(4)}"
    try:
        port = free_port()
        write_project(root, database_settings(args.db, root, pg_name), port)
        if args.db == "postgres":
            pg_admin(f'CREATE DATABASE "{pg_name}"')
        setup_django(root)
        floor = floor_insert(2000)
        progress(f"insert floor: {floor:,.0f}/s")
        results = [
            run_servers(root, port, n, args.workers, args.tasks, base=(i + 1) * 1_000_000)
            for i, n in enumerate(args.servers)
        ]
    except VerificationError as exc:
        sys.stderr.write(f"VERIFICATION FAILED: {exc}\n")
        return 1
    except BenchError as exc:
        sys.stderr.write(f"benchmark could not run: {exc}\n")
        return 2
    finally:
        cleanup(args, root, pg_name)
    print(f"{args.db}, {args.workers} worker(s) a server, insert floor {floor:,.0f}/s")
    print("servers  write_row tasks/s  ratio to floor  vs 1 server")
    first = results[0]["per_s"]
    for r in results:
        print(
            f"{r['servers']:>7}  {r['per_s']:>17,.0f}  {r['per_s'] / floor:>13.2f}x"
            f"  {r['per_s'] / first:>10.2f}x"
        )
    print("verified: every task SUCCESSFUL exactly once, one row each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
