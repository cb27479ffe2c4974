"""The errors leek raises, one kind a class. Imported by every process."""


class LeekError(Exception):
    """Base class of every error leek raises."""


class UnpicklableError(LeekError, TypeError):
    """A task's callable, an argument or a return value cannot be pickled."""


class UnserializableError(LeekError, TypeError):
    """An argument or return value of a JSON task is not plain JSON data."""


class PickleRefused(LeekError):
    """The site stores no pickles (LEEK["serializer"] = "json"); a pickled row is not run."""


class TaskNotFinished(LeekError, ValueError):
    """The task has no return value or error yet."""


class TaskFailed(LeekError):
    """The task ended FAILED; `.task` is the row, the traceback is in the message."""

    def __init__(self, task: object, message: str) -> None:
        super().__init__(message)
        self.task = task


class TaskTimeout(LeekError, TimeoutError):
    """`wait()` gave up before the task ended."""


class WireError(LeekError, ValueError):
    """A line on the wire is not one of the protocol's messages."""


class CallableNotFound(LeekError):
    """A worker cannot import or unpickle the call saved in a task row."""


class WorkerLost(LeekError):
    """The worker process died (or was killed) while it ran the task."""


class TaskTimedOut(LeekError):
    """The task ran past its time limit; leek killed its worker and the worker's children."""


class NotATask(LeekError):
    """A JSON row names something that is not a declared task; it is not run."""


class Cancelled(LeekError):
    """An operator cancelled the task before it started (`manage.py leek cancel`, the admin)."""


class Terminated(LeekError):
    """An operator stopped the running task; leek killed its worker and the worker's children."""


class OutcomeRefused(LeekError):
    """The database refused a task's outcome (too large, or text it cannot store)."""


class BadSignature(LeekError):
    """A stored pickle is unsigned or its signature does not verify; it was not unpickled."""


class Snooze(LeekError):
    """Raised by a task: run it again in `seconds`, spending neither an attempt nor a retry."""

    def __init__(self, seconds: float = 0.0) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
            raise ValueError(f"Snooze({seconds!r}): give seconds, 0 or more.")
        super().__init__(f"snoozed for {seconds:g} s")
        self.seconds = float(seconds)
