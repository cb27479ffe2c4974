"""Wait for a batch of tasks to end, and check that none was lost or ran twice.

Runs in the benchmark process, reading leek's task table and benchapp's rows through the
ORM. Every check raises VerificationError saying what went wrong: a task not SUCCESSFUL, a
task run more than once (attempts != 1), a row missing or doubled.
"""

from __future__ import annotations

import time

from common import VerificationError, progress

POLL_INTERVAL = 0.020  # seconds between two counts of SUCCESSFUL rows
PHASE_TIMEOUT = 120.0  # seconds a batch may take before it counts as lost


def wait_successful(ids: list[int], timeout: float = PHASE_TIMEOUT) -> float:
    """Poll until every id is SUCCESSFUL; return the time.perf_counter() it was seen."""
    from leek.models import Task

    # Only this process creates tasks, so the id range holds exactly these ids (checked
    # after); a range is cheaper to count than an IN of thousands of parameters.
    rows = Task.objects.filter(id__gte=min(ids), id__lte=max(ids), status="SUCCESSFUL")
    deadline = time.perf_counter() + timeout
    last_report = time.perf_counter()
    while True:
        done = rows.count()
        now = time.perf_counter()
        if done >= len(ids):
            return now
        if now > deadline:
            raise VerificationError(
                f"only {done} of {len(ids)} tasks SUCCESSFUL after {timeout:g} s: "
                f"{status_counts(ids)}"
            )
        if now - last_report > 2:
            progress(f"  {done}/{len(ids)} SUCCESSFUL")
            last_report = now
        time.sleep(POLL_INTERVAL)


def status_counts(ids: list[int]) -> dict[str, int]:
    """Return how many of the tasks are in each status."""
    from django.db.models import Count

    from leek.models import Task

    counts: dict[str, int] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        query = Task.objects.filter(id__in=chunk).values("status").annotate(c=Count("id"))
        for row in query:
            counts[row["status"]] = counts.get(row["status"], 0) + row["c"]
    return counts


def verify_tasks(ids: list[int], what: str) -> None:
    """Check that every task ran once and ended SUCCESSFUL."""
    from leek.models import Task

    if len(set(ids)) != len(ids):
        raise VerificationError(f"{what}: offload returned duplicate ids")
    counts = status_counts(ids)
    if counts != {"SUCCESSFUL": len(ids)}:
        raise VerificationError(f"{what}: expected {len(ids)} SUCCESSFUL, got {counts}")
    in_range = Task.objects.filter(id__gte=min(ids), id__lte=max(ids))
    if in_range.count() != len(ids):
        raise VerificationError(f"{what}: {in_range.count()} task rows in the id range")
    reran = list(in_range.exclude(attempts=1).values_list("id", "attempts")[:10])
    if reran:
        raise VerificationError(f"{what}: tasks with attempts != 1 (id, attempts): {reran}")


def verify_rows(first: int, count: int, what: str) -> None:
    """Check that the rows first..first+count-1 exist exactly once each."""
    from benchapp.models import Row

    rows = Row.objects.filter(n__gte=first, n__lt=first + count)
    total = rows.count()
    distinct = rows.values("n").distinct().count()
    if total != count or distinct != count:
        raise VerificationError(
            f"{what}: expected {count} rows with distinct n, got {total} rows, "
            f"{distinct} distinct n (lost {count - distinct}, doubled {total - distinct})"
        )
