"""Read a stored call or return value as Python text, without unpickling it.

Runs in the web process (the admin, the live page). Unpickling would import modules and run
code of the task table's writers here; instead the pickle's opcodes are walked by a small
symbolic machine that builds plain containers and reprs (`pickletools.genops` parses, nothing
is imported), so a call reads `example.tasks.slow(seconds=5)`. A payload that starts with
`{` or `[` is JSON text, read as such, and so is anything the row says is JSON.
"""

from __future__ import annotations

import json
import pickletools
from typing import Any

from leek import signing


class Symbol:
    """A value shown by its source text: a global (`datetime.date`) or an object built by one."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Symbol) and other.text == self.text


class Unreadable(ValueError):
    """The bytes are no pickle (or JSON) this module can read."""


_MARK = object()
# Opcodes that push their argument as it is.
_CONSTANTS = {
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
    "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
}  # fmt: skip
_FIXED = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_IGNORED = {"PROTO", "FRAME", "STOP"}


class _Machine:
    """The pickle machine's stack and memo, with symbols where the real one would import."""

    def __init__(self) -> None:
        self.stack: list[Any] = []
        self.memo: dict[Any, Any] = {}

    def pop_mark(self) -> list[Any]:
        """Pop and return the items above the topmost mark."""
        items: list[Any] = []
        while (item := self.stack.pop()) is not _MARK:
            items.append(item)
        items.reverse()
        return items

    def step(self, name: str, arg: Any) -> None:
        """Apply one opcode."""
        handler = getattr(self, "op_" + name.lower(), None)
        if name in _CONSTANTS:
            self.stack.append(arg)
        elif name in _FIXED:
            self.stack.append(_FIXED[name])
        elif handler is not None:
            handler(arg)
        elif name not in _IGNORED:
            raise Unreadable(f"the opcode {name} is not shown")

    def op_mark(self, arg: Any) -> None:
        self.stack.append(_MARK)

    def op_pop(self, arg: Any) -> None:
        self.stack.pop()

    def op_pop_mark(self, arg: Any) -> None:
        self.pop_mark()

    def op_dup(self, arg: Any) -> None:
        self.stack.append(self.stack[-1])

    def op_memoize(self, arg: Any) -> None:
        self.memo[len(self.memo)] = self.stack[-1]

    def op_put(self, arg: Any) -> None:
        self.memo[arg] = self.stack[-1]

    op_binput = op_long_binput = op_put

    def op_get(self, arg: Any) -> None:
        self.stack.append(self.memo[arg])

    op_binget = op_long_binget = op_get

    def op_empty_tuple(self, arg: Any) -> None:
        self.stack.append(())

    def op_tuple(self, arg: Any) -> None:
        self.stack.append(tuple(self.pop_mark()))

    def _tuple_of(self, n: int) -> None:
        items = tuple(self.stack[-n:])
        del self.stack[-n:]
        self.stack.append(items)

    def op_tuple1(self, arg: Any) -> None:
        self._tuple_of(1)

    def op_tuple2(self, arg: Any) -> None:
        self._tuple_of(2)

    def op_tuple3(self, arg: Any) -> None:
        self._tuple_of(3)

    def op_empty_list(self, arg: Any) -> None:
        self.stack.append([])

    def op_list(self, arg: Any) -> None:
        self.stack.append(self.pop_mark())

    def op_append(self, arg: Any) -> None:
        item = self.stack.pop()
        self.stack[-1].append(item)

    def op_appends(self, arg: Any) -> None:
        items = self.pop_mark()
        self.stack[-1].extend(items)

    def op_empty_dict(self, arg: Any) -> None:
        self.stack.append({})

    def op_dict(self, arg: Any) -> None:
        items = self.pop_mark()
        self.stack.append(dict(zip(items[::2], items[1::2], strict=True)))

    def op_setitem(self, arg: Any) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self.stack[-1][key] = value

    def op_setitems(self, arg: Any) -> None:
        items = self.pop_mark()
        self.stack[-1].update(zip(items[::2], items[1::2], strict=True))

    def op_empty_set(self, arg: Any) -> None:
        self.stack.append(set())

    def op_additems(self, arg: Any) -> None:
        items = self.pop_mark()
        self.stack[-1].update(items)

    def op_frozenset(self, arg: Any) -> None:
        self.stack.append(frozenset(self.pop_mark()))

    def op_bytearray8(self, arg: Any) -> None:
        self.stack.append(bytearray(arg))

    def op_global(self, arg: Any) -> None:
        self.stack.append(Symbol(arg.replace(" ", ".")))

    def op_stack_global(self, arg: Any) -> None:
        name = self.stack.pop()
        module = self.stack.pop()
        self.stack.append(Symbol(f"{module}.{name}"))

    def _built(self, callable_: Any, args: Any, kwargs: Any = None) -> None:
        parts = [repr(a) for a in args]
        parts += [f"{k}={v!r}" for k, v in (kwargs or {}).items()]
        self.stack.append(Symbol(f"{callable_!r}({', '.join(parts)})"))

    def op_reduce(self, arg: Any) -> None:
        args = self.stack.pop()
        self._built(self.stack.pop(), args)

    def op_newobj(self, arg: Any) -> None:
        self.op_reduce(arg)

    def op_newobj_ex(self, arg: Any) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        self._built(self.stack.pop(), args, kwargs)

    def op_build(self, arg: Any) -> None:
        # The object's state (its __dict__) is not part of how it is shown.
        self.stack.pop()


def read_value(data: bytes | memoryview | None, is_json: bool = False) -> Any:
    """Return the value a pickle (or JSON text) holds, with `Symbol`s for what it imports.

    `is_json`: the row says its encoding is JSON (a Django Tasks row), whatever the bytes.
    """
    if data is None:
        raise Unreadable("nothing is stored")
    raw = bytes(data)
    if raw.startswith(signing.MAGIC):  # shown, not unpickled: the signature does not matter
        raw = raw[len(signing.MAGIC) + signing.DIGEST_SIZE :]
    if is_json or raw[:1] in (b"{", b"["):
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise Unreadable(f"not JSON: {exc}") from exc
    machine = _Machine()
    try:
        for opcode, arg, _ in pickletools.genops(raw):
            machine.step(opcode.name, arg)
    except (ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
        raise Unreadable(f"{type(exc).__name__}: {exc}") from exc
    if len(machine.stack) != 1:
        raise Unreadable("the pickle does not end with one value")
    return machine.stack[0]


def _split_call(value: Any) -> tuple[list[Any], dict[str, Any]]:
    """Return the args and kwargs of a stored call: (fn, args, kwargs), or JSON's own shapes."""
    if isinstance(value, tuple) and len(value) == 3:
        return list(value[1]), dict(value[2])
    if isinstance(value, dict) and ({"args", "kwargs"} & value.keys()):
        return list(value.get("args", ())), dict(value.get("kwargs", {}))
    if isinstance(value, list) and len(value) == 2:
        return list(value[0]), dict(value[1])
    raise Unreadable(f"a call is (callable, args, kwargs), not {str(value)[:200]}")


def call_text(path: str, payload: bytes | memoryview | None, is_json: bool = False) -> str:
    """Return the call as Python (`example.tasks.slow(seconds=5)`), or say why it cannot."""
    try:
        args, kwargs = _split_call(read_value(payload, is_json))
        parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    except (Unreadable, RecursionError) as exc:
        return f"{path}(…) (cannot be read: {exc})"
    return f"{path}({', '.join(parts)})"


def value_text(data: bytes | memoryview | None, is_json: bool = False) -> str:
    """Return a stored return value as Python text ("-" when nothing was stored)."""
    if data is None:
        return "-"
    try:
        return repr(read_value(data, is_json))
    except (Unreadable, RecursionError) as exc:
        return f"(cannot be read: {exc})"
