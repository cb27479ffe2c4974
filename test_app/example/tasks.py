"""The example's tasks: one that succeeds, one that fails, one that takes its time."""

import time

from leek import Leek

leek = Leek()


@leek.task
def add(a, b):
    """Return the sum of `a` and `b`."""
    return a + b


@leek.task
def fail(message="boom"):
    """Raise a RuntimeError, to show a FAILED task."""
    raise RuntimeError(message)


@leek.task
def slow(seconds=5):
    """Sleep for `seconds`, to show a RUNNING task."""
    time.sleep(seconds)
    return f"slept {seconds} s"
