"""Encode and decode task calls and return values: the only module that calls pickle.loads.

Runs in the web process (dumps, at offload time) and in the workers (loads, then dumps the
return value). `.offload()` pickles, or stores JSON when LEEK["serializer"] or the task says
so; the Django Tasks backend stores JSON (`*_json`). The
pickled call in the database is code: every pickle is signed when stored and checked before
it is unpickled (leek.signing), and the wire never carries pickles.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from typing import Any

from leek import signing
from leek.exceptions import CallableNotFound, UnpicklableError, UnserializableError

PROTOCOL = pickle.HIGHEST_PROTOCOL


def callable_path(fn: Callable[..., Any]) -> str:
    """Return the dotted path of a callable, as people and the admin read it."""
    module = getattr(fn, "__module__", None) or type(fn).__module__
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{name}"


def dumps_call(fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> bytes:
    """Pickle a call; raise `UnpicklableError` naming the part that cannot be pickled."""
    try:
        data = pickle.dumps((fn, args, kwargs), PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - pickling raises any kind; we name the culprit
        raise _culprit(fn, args, kwargs, exc) from exc
    return signing.sign(data, "call")


def _culprit(
    fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any], exc: Exception
) -> UnpicklableError:
    path = callable_path(fn)
    try:
        pickle.dumps(fn, PROTOCOL)
    except Exception as fn_exc:  # noqa: BLE001
        return UnpicklableError(
            f"The task {path} cannot be pickled ({fn_exc}); a task must be a function "
            "defined at the top level of an importable module."
        )
    parts = [(f"argument {i}", a) for i, a in enumerate(args)]
    parts += [(f"argument {name!r}", v) for name, v in kwargs.items()]
    for label, value in parts:
        try:
            pickle.dumps(value, PROTOCOL)
        except Exception as arg_exc:  # noqa: BLE001
            return UnpicklableError(
                f"{label} of {path} ({type(value).__name__}) cannot be pickled: {arg_exc}. "
                "Pass plain data (ids, strings, numbers) and load the rest inside the task."
            )
    return UnpicklableError(f"The call to {path} cannot be pickled: {exc}")


def loads_call(payload: bytes, path: str) -> tuple[Callable[..., Any], tuple, dict[str, Any]]:
    """Unpickle a call saved by `dumps_call`; raise `CallableNotFound` saying which callable.

    Its signature is checked first (`BadSignature`: nothing is unpickled).
    """
    data = signing.unsign(payload, f"the call to {path}", "call")
    try:
        fn, args, kwargs = pickle.loads(data)  # noqa: S301 - signed by this site's key
    except Exception as exc:  # noqa: BLE001 - unpickling runs arbitrary imports
        raise CallableNotFound(
            f"Cannot load the call to {path}: {type(exc).__name__}: {exc}. Was its module "
            "moved, renamed or deleted since the task was offloaded?"
        ) from exc
    return fn, args, kwargs


def dumps_value(value: Any, path: str) -> bytes:
    """Pickle a task's return value; raise `UnpicklableError` saying whose it is."""
    try:
        data = pickle.dumps(value, PROTOCOL)
    except Exception as exc:  # noqa: BLE001
        raise UnpicklableError(
            f"The return value of {path} ({type(value).__name__}) cannot be pickled: {exc}"
        ) from exc
    return signing.sign(data, "value")


def loads_value(data: bytes | memoryview | None, what: str = "a return value") -> Any:
    """Unpickle a stored return value (None when nothing was stored); check it is signed."""
    if data is None:
        return None
    return pickle.loads(signing.unsign(data, what, "value"))  # noqa: S301 - signed by this site's key


def dumps_json_call(path: str, args: tuple, kwargs: dict[str, Any]) -> bytes:
    """Encode a call as JSON; raise `UnserializableError` naming an argument that is not JSON.

    The shape of the Django Tasks backend's rows: {"args": [...], "kwargs": {...}}.
    """
    parts = [(f"argument {i}", a) for i, a in enumerate(args)]
    parts += [(f"argument {name!r}", v) for name, v in kwargs.items()]
    for label, value in parts:
        check_json(value, f"{label} of {path}")
    return dumps_json({"args": list(args), "kwargs": kwargs})


def check_json(value: Any, what: str) -> None:
    """Raise `UnserializableError` unless `value` is JSON data that reads back the same.

    Tuples are taken (they read back as lists); dict keys must be strings, numbers finite.
    """
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise UnserializableError(f"{what} is {value!r}, which JSON cannot hold.")
        return
    if isinstance(value, list | tuple):
        for item in value:
            check_json(item, what)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UnserializableError(
                    f"{what} has the key {key!r}; JSON keys are strings, write str({key!r})."
                )
            check_json(item, what)
        return
    raise UnserializableError(
        f"{what} holds a {type(value).__module__}.{type(value).__qualname__}, which is not "
        "JSON data (None, bool, int, float, str, list, dict); pass ids and plain values and "
        "load the rest inside the task."
    )


def dumps_json(value: Any) -> bytes:
    """Encode a JSON-ready value (Django's normalize_json output) as UTF-8 JSON."""
    return json.dumps(value, separators=(",", ":")).encode()


def loads_json(data: bytes | memoryview) -> Any:
    """Decode a value stored by `dumps_json`."""
    return json.loads(bytes(data))
