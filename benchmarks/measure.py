"""Measure a live leek server: offloads, batches end to end, latency, and a READY backlog.

Runs in the benchmark process, which plays the web side: it offloads the tasks, and the
`python -m django leek` servers it starts (live_server.py) run them. Every batch is checked
(verify.py) before its figures are returned; `run_pool` and `measure_backlog` stop every
server they start, by pid, even when a check fails.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from common import Sizes, VerificationError, progress
from live_server import Server, start_server, stop_server
from memory import MB, MemorySampler, memory_figures
from verify import verify_rows, verify_tasks, wait_successful


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
