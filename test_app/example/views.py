"""Views of the example: the task page, its JSON feed, and the buttons that offload tasks.

The `greet` button enqueues a django.tasks task instead: the same row, the same table.
"""

from datetime import datetime

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from example import tasks
from leek.models import Task

LATEST = 20

# What each button offloads, and how the message shows the call.
OFFLOADS = {
    "add": ("add(2, 3)", lambda: tasks.add.offload(2, 3)),
    "fail": ("fail()", lambda: tasks.fail.offload()),
    "slow": ("slow(seconds=5)", lambda: tasks.slow.offload(seconds=5)),
}
if tasks.greet is not None:  # Django's Tasks framework, through leek's backend
    OFFLOADS["greet"] = (
        "greet.enqueue(name='leek') (django.tasks)",
        lambda: tasks.greet.enqueue(name="leek"),
    )


def _time(moment: datetime | None) -> str:
    """Format a timestamp for the table, in the project's time zone."""
    if moment is None:
        return ""
    return timezone.localtime(moment).strftime("%H:%M:%S.%f")[:-3]


def _row(task: Task) -> dict:
    """Turn a task into the strings one line of the table shows."""
    outcome = ""
    if task.status == "SUCCESSFUL":
        outcome = repr(task.return_value)
    elif task.status == "FAILED":
        outcome = task.exception_message
    return {
        "id": task.id,
        "callable_path": task.callable_path,
        "status": task.status,
        "pool": task.pool,
        "enqueued_at": _time(task.enqueued_at),
        "started_at": _time(task.started_at),
        "finished_at": _time(task.finished_at),
        "worker_pid": task.worker_pid or "",
        "outcome": outcome,
    }


def _latest_rows() -> list[dict]:
    """Return the rows of the latest tasks, newest first."""
    return [_row(task) for task in Task.objects.order_by("-id")[:LATEST]]


def index(request: HttpRequest) -> HttpResponse:
    """Show the latest tasks and the buttons that offload new ones."""
    context = {
        "rows": _latest_rows(),
        "buttons": [(name, call) for name, (call, _) in OFFLOADS.items()],
        "leek_bind": settings.LEEK["bind"],
    }
    return render(request, "example/index.html", context)


def tasks_json(request: HttpRequest) -> JsonResponse:
    """Return the latest tasks as JSON, for the page to refresh itself."""
    return JsonResponse({"tasks": _latest_rows()})


@require_POST
def offload(request: HttpRequest, name: str) -> HttpResponse:
    """Offload the task of the button that was pressed, then go back to the page."""
    if name not in OFFLOADS:
        raise Http404(f"No task called {name!r} here.")
    call, offload_it = OFFLOADS[name]
    handle = offload_it()
    messages.info(request, f"Offloaded task {handle.id}: {call}")
    return redirect("index")
