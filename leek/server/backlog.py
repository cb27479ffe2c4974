"""The bounded window of READY task ids waiting for a worker, in dispatch order.

Lives in the server process, between the listener thread (which adds announced ids), the
sweep (which adds ids found in the table) and the supervisor (which takes ids for its
workers and releases them when done). The table is the truth: an id dropped here because the
window is full is found again by a later sweep.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import threading
from collections.abc import Iterable

# The most ids held at once; the sweep pages through a larger backlog.
CAPACITY = 10_000


class Backlog:
    """Ids in priority order (higher first, then oldest), each at most once."""

    def __init__(self, pools: Iterable[str] = (), capacity: int = CAPACITY) -> None:
        self.pools = frozenset(pools)
        self.capacity = capacity
        self._heap: list[tuple[int, int]] = []
        # Id -> priority of the ids in the heap or handed out and not yet released.
        self._known: dict[int, int] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # Set when ids were dropped for want of room: the sweep should run soon.
        self.overflowed = False

    def fileno(self) -> int:
        """Return the fd that becomes readable when ids were added."""
        return self._wake_r

    def serves(self, pool: str) -> bool:
        """Tell whether this server runs the tasks of `pool`."""
        return not self.pools or pool in self.pools

    def add(self, rows: Iterable[tuple[int, int]]) -> int:
        """Add (id, priority) pairs not already held; return how many were added."""
        added = 0
        with self._lock:
            for task_id, priority in rows:
                if task_id in self._known:
                    continue
                if len(self._heap) >= self.capacity:
                    self.overflowed = True
                    break
                heapq.heappush(self._heap, (-priority, task_id))
                self._known[task_id] = priority
                added += 1
        if added:
            self._wake()
        return added

    def add_announced(self, pool: str, priority: int, ids: Iterable[int]) -> int:
        """Add ids a client announced, if this server runs their pool."""
        if not self.serves(pool):
            return 0
        return self.add((task_id, priority) for task_id in ids)

    def take(self) -> int | None:
        """Hand out the next id, or None when there is none; it stays known until released."""
        with self._lock:
            if not self._heap:
                return None
            return heapq.heappop(self._heap)[1]

    def release(self, task_id: int) -> None:
        """Forget an id handed out: its worker is done with it."""
        with self._lock:
            self._known.pop(task_id, None)

    def give_back(self, task_id: int) -> None:
        """Put back an id that was handed out but never started."""
        with self._lock:
            priority = self._known.get(task_id)
            if priority is not None:
                heapq.heappush(self._heap, (-priority, task_id))
        self._wake()

    def room(self) -> int:
        """Return how many more ids fit."""
        with self._lock:
            return self.capacity - len(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def clear_wakeup(self) -> None:
        """Empty the wake-up pipe once its readability has been seen."""
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full of wake-ups already
            os.write(self._wake_w, b"\0")

    def close(self) -> None:
        """Close the wake-up pipe."""
        os.close(self._wake_r)
        os.close(self._wake_w)
