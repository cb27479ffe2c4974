"""The admin page of the task table: read-only, payload and result shown as text.

Runs in the web process. Pickles are shown through pickletools (never unpickled here);
the JSON rows of the Django Tasks backend are shown as their JSON text.
"""

from __future__ import annotations

import pickletools
from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from leek.models import Encoding, Task

# Opcodes that only manage the pickle machine, not the data.
_PLUMBING = {"PROTO", "FRAME", "MEMOIZE", "BINPUT", "LONG_BINPUT", "BINGET", "LONG_BINGET"}


def _readable(data: bytes | memoryview | None, encoding: str = Encoding.PICKLE) -> str:
    """Show a pickle's names and values without unpickling it (that would run code here)."""
    if data is None:
        return "-"
    if encoding == Encoding.JSON:
        return bytes(data).decode(errors="replace")[:2000]
    try:
        parts = [
            repr(arg)
            for opcode, arg, _ in pickletools.genops(bytes(data))
            if arg is not None and opcode.name not in _PLUMBING
        ]
    except Exception as exc:  # noqa: BLE001 - a damaged pickle is shown, not raised
        return f"(cannot be read: {exc})"
    return " ".join(parts)[:2000]


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    """Browse and search tasks; nothing here changes them."""

    list_display = (
        "id",
        "callable_path",
        "pool",
        "status",
        "priority",
        "attempts",
        "enqueued_at",
        "started_at",
        "finished_at",
        "worker_pid",
    )
    list_filter = ("status", "pool")
    search_fields = ("callable_path",)
    ordering = ("-id",)
    exclude = ("payload", "result")
    readonly_fields = (
        "callable_path",
        "encoding",
        "call",
        "pool",
        "status",
        "priority",
        "run_after",
        "attempts",
        "enqueued_at",
        "started_at",
        "finished_at",
        "worker_host",
        "worker_pid",
        "returned",
        "exception_class_path",
        "traceback",
    )

    @admin.display(description="call")
    def call(self, task: Task) -> str:
        """Show the call's names and values (a pickle's opcodes' arguments, or JSON)."""
        return _readable(task.payload, task.encoding)

    @admin.display(description="return value")
    def returned(self, task: Task) -> str:
        """Show the return value's names and values (a pickle's opcodes' arguments, or JSON)."""
        return _readable(task.result, task.encoding)

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Tasks are offloaded from code, not typed in."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Rows are the record of what ran; they are not edited."""
        return False
