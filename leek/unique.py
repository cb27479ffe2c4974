"""Unique keys at offload time: a call whose key a task holds saves nothing new.

Runs in the web process, from leek.api.save(). The database decides, so two processes that
race get one task: a unique index over Task.unique_hold, which is the key while the row is
READY (or RUNNING, for unique_until "end") and NULL otherwise. Each row is inserted in a
savepoint of its own; when the index refuses it, the savepoint is rolled back and the id of
the task holding the key is returned instead. It works inside the caller's atomic block or
outside one.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction

from leek import hotpath
from leek.models import Task

KEY = len(hotpath.OFFLOAD_COLUMNS) + hotpath.LIMIT_COLUMNS.index("unique_key")
# Inserts tried for one row: each refusal names a holder, unless it ended meanwhile.
TRIES = 5


def insert(using: str, rows: list[tuple]) -> tuple[list[int], list[int]]:
    """Insert rows that carry a unique key; return every row's id and the ids inserted."""
    ids: list[int] = []
    new: list[int] = []
    with transaction.atomic(using=using):
        for row in rows:
            task_id, inserted = _insert(using, row)
            ids.append(task_id)
            if inserted:
                new.append(task_id)
    return ids, new


def _insert(using: str, row: tuple) -> tuple[int, bool]:
    key = row[KEY]
    for _ in range(TRIES):
        try:
            with transaction.atomic(using=using):
                return hotpath.insert(using, [row], limited=True)[0], True
        except IntegrityError:
            holders = Task.objects.using(using).filter(unique_hold=key)
            holder = holders.values_list("id", flat=True).first()
            if holder is not None:
                return holder, False
    raise IntegrityError(
        f"a task with the unique key {key!r} could not be saved, nor the task holding the "
        f"key found, in {TRIES} tries"
    )
