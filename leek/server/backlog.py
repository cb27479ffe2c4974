"""The bounded window of READY task ids waiting for a worker, in dispatch order.

Lives in the server process's main thread, between the listener (which adds announced ids),
the sweep (which adds ids found in the table) and the supervisor (which takes ids for its
workers and releases them when done), all three parts of the supervisor's one loop. The
table is the truth: an id left out because the window is full is found again by a later
sweep. When the window is full, a new id of higher priority takes the place of the one that
would run last, so a burst of low-priority work cannot keep an urgent task waiting.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

# The most ids held at once; the sweep pages through a larger backlog. A page reads past
# the ids held to find new ones, and nothing is dispatched while it runs: on a million
# READY rows in SQLite, a window of 10,000 stopped the workers for 25-30 ms at each page;
# 2,000 keeps that near 5 ms and still holds far more than the workers can take ahead.
CAPACITY = 2_000


class Backlog:
    """Ids in priority order (higher first, then oldest), each at most once."""

    def __init__(self, pools: Iterable[str] = (), capacity: int = CAPACITY) -> None:
        self.pools = frozenset(pools)
        self.capacity = capacity
        # (priority, -id), sorted: the next to run is at the end.
        self._ready: list[tuple[int, int]] = []
        # Id -> priority of the ids in the window or handed out and not yet released.
        self._known: dict[int, int] = {}
        # Set when ids were left out for want of room: the sweep should run soon.
        self.overflowed = False

    def serves(self, pool: str) -> bool:
        """Tell whether this server runs the tasks of `pool`."""
        return not self.pools or pool in self.pools

    def add(self, rows: Iterable[tuple[int, int]]) -> int:
        """Add (id, priority) pairs not already held; return how many were added."""
        added = 0
        for task_id, priority in rows:
            if task_id in self._known:
                continue
            entry = (priority, -task_id)
            if len(self._ready) >= self.capacity:
                self.overflowed = True
                if entry <= self._ready[0]:
                    continue  # it would run after every id held
                _, last = self._ready.pop(0)
                del self._known[-last]
            bisect.insort(self._ready, entry)
            self._known[task_id] = priority
            added += 1
        return added

    def add_announced(self, pool: str, priority: int, ids: Iterable[int]) -> int:
        """Add ids a client announced, if this server runs their pool."""
        if not self.serves(pool):
            return 0
        return self.add((task_id, priority) for task_id in ids)

    def take(self, count: int = 1) -> list[int]:
        """Hand out up to `count` next ids; each stays known until released."""
        return [-self._ready.pop()[1] for _ in range(min(count, len(self._ready)))]

    def release(self, task_id: int | None) -> None:
        """Forget an id handed out: its worker is done with it (None: no id).

        It may have been given back meanwhile (its worker retired, then ran it all the
        same): then it leaves the window too.
        """
        priority = self._known.pop(task_id, None)
        if priority is None:
            return
        entry = (priority, -task_id)
        at = bisect.bisect_left(self._ready, entry)
        if at < len(self._ready) and self._ready[at] == entry:
            del self._ready[at]

    def give_back(self, task_id: int) -> None:
        """Put back an id that was handed out but never started."""
        priority = self._known.get(task_id)
        if priority is not None:
            bisect.insort(self._ready, (priority, -task_id))

    def held(self) -> int:
        """Return how many ids are in the window or handed out and not yet released."""
        return len(self._known)

    def room(self) -> int:
        """Return how many more ids fit."""
        return self.capacity - len(self._ready)

    def __len__(self) -> int:
        return len(self._ready)
