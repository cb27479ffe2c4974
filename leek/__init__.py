"""leek: background tasks for Django, with nothing to install but the package.

    from leek import Leek
    leek = Leek()

    @leek.task
    def send_welcome(user_id): ...

    send_welcome.offload(user_id=42)

The names are imported lazily, so that `import leek` works before Django is set up
(in settings files, in `setup.py`, in the server before `django.setup()`).
"""

from typing import Any

__all__ = [
    "ConfiguredTask",
    "Leek",
    "Snooze",
    "TaskHandle",
    "TaskOptions",
    "list_tasks",
    "push_task_to_queue",
    "query_task",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from leek import api

        return getattr(api, name)
    raise AttributeError(f"module 'leek' has no attribute {name!r}")
