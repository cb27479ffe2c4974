"""Uniqueness and limit options of a task, checked once and turned into each call's columns.

Runs in the web process, from leek.api (TaskOptions checks its fields here, and `.offload()`
asks each call's columns). A key is a str, or a function given the call's own arguments
that returns one: `unique_key=lambda report_id: f"report-{report_id}"`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

from leek.models import UniqueUntil

# The length of Task.unique_key and Task.limit_key.
KEY_MAX = 255
SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"\s*(\d+)\s*/\s*([smh])\s*")


class Options(Protocol):
    """The fields of leek.api.TaskOptions read here."""

    unique_key: str | Callable[..., str] | None
    unique_until: str
    concurrency_key: str | Callable[..., str] | None
    max_concurrency: int | None
    rate: str | None


def rate_interval(rate: str) -> float:
    """Return the seconds between two starts of a rate: "10/m" -> 6.0."""
    found = _RATE.fullmatch(rate) if isinstance(rate, str) else None
    if found is None or int(found.group(1)) < 1:
        raise ValueError(
            f"rate={rate!r}: give starts per second, minute or hour, as '20/s', '10/m', '100/h'."
        )
    return SECONDS[found.group(2)] / int(found.group(1))


def check_options(options: Options) -> None:
    """Raise ValueError or TypeError naming the first option that is not right."""
    for name in ("unique_key", "concurrency_key"):
        value = getattr(options, name)
        if value is not None and not isinstance(value, str) and not callable(value):
            raise TypeError(
                f"{name}={value!r}: give a str, or a function of the call's arguments."
            )
    if options.unique_until not in UniqueUntil.values:
        raise ValueError(
            f"unique_until={options.unique_until!r}: give 'start' (unique while READY) or "
            "'end' (while READY or RUNNING)."
        )
    most = options.max_concurrency
    if most is not None and (not isinstance(most, int) or isinstance(most, bool) or most < 1):
        raise ValueError(f"max_concurrency={most!r}: give a whole number, 1 or more.")
    if options.rate is not None:
        rate_interval(options.rate)
    if options.concurrency_key is not None and most is None and options.rate is None:
        raise ValueError(
            f"concurrency_key={options.concurrency_key!r} limits nothing by itself; give "
            "max_concurrency=N (at most N at once) or rate='10/m' as well."
        )


def _key(name: str, given: str | Callable[..., str], path: str, args: tuple, kwargs: dict) -> str:
    key = given(*args, **kwargs) if callable(given) else given
    if not isinstance(key, str) or not key or len(key) > KEY_MAX:
        raise ValueError(
            f"{name} of {path} gave {key!r}; a key is a non-empty str of at most {KEY_MAX} "
            "characters."
        )
    return key


def columns(options: Options, path: str, args: tuple, kwargs: dict[str, Any]) -> tuple:
    """Return the uniqueness and limit columns of one call of the task at `path`.

    In the order of leek.hotpath.LIMIT_COLUMNS.
    """
    unique = None
    if options.unique_key is not None:
        unique = _key("unique_key", options.unique_key, path, args, kwargs)
    limit_key = None
    if options.max_concurrency is not None or options.rate is not None:
        given = options.concurrency_key
        limit_key = path if given is None else _key("concurrency_key", given, path, args, kwargs)
    interval = None if options.rate is None else rate_interval(options.rate)
    until = UniqueUntil(options.unique_until).value
    return (unique, until, limit_key, options.max_concurrency, interval)
