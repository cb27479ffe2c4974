"""The admin of the task table: a list that reads at a glance, a page per task, the actions.

Runs in the web process. Rows are never edited here; the stored call and return value are
shown as Python text read from the pickle without unpickling it (leek.calls). The actions
Retry, Cancel and Terminate call leek.control, record themselves in the admin's log, and
only format what control did. The live page of the servers is leek.adminlive's, the
schedules' list leek.adminschedules's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from leek import calls, control
from leek.adminlist import (
    CallableFilter,
    EstimatedCountPaginator,
    PoolFilter,
    cut,
    duration,
    log_action,
    moment,
)
from leek.adminlive import ServerAdmin
from leek.adminschedules import ScheduleAdmin
from leek.models import Encoding, Schedule, Server, Task, TaskStatus

# Characters of the call and of the error the list shows; the task's page shows them whole.
CALL_CHARS = 70
ERROR_CHARS = 60


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    """Browse, filter and search tasks; nothing here edits a row."""

    list_display = (
        "id",
        "status_badge",
        "call_short",
        "pool",
        "prio",
        "enqueued",
        "waited",
        "ran",
        "worker",
        "error_short",
    )
    list_display_links = ("id", "call_short")
    actions = ("retry", "cancel", "terminate")
    list_filter = (
        "status",
        PoolFilter,
        CallableFilter,
        ("enqueued_at", admin.DateFieldListFilter),
    )
    search_fields = ("callable_path",)
    search_help_text = "A task id, or part of a callable's dotted path."
    ordering = ("-id",)
    # Newest first, always: that is the order every index serves; sorting a million rows by
    # another column would be a sort of the whole table.
    sortable_by = ()
    list_per_page = 50
    paginator = EstimatedCountPaginator
    # No COUNT(*) of the whole table on each page load (issue 11: a million rows).
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    fieldsets = (
        (
            None,
            {"fields": ("status_badge", "call", "outcome", "traceback_block", "operator")},
        ),
        ("Attempts", {"fields": ("attempt_table",)}),
        (
            "Timing",
            {"fields": ("enqueued", "due", "started", "finished", "waited", "ran")},
        ),
        ("Worker", {"fields": ("worker",)}),
        (
            "Options",
            {
                "fields": (
                    "pool",
                    "priority",
                    "timeout",
                    "retries",
                    "retry_backoff",
                    "lost_retries",
                    "attempts",
                )
            },
        ),
    )
    readonly_fields = (
        "status_badge",
        "call",
        "outcome",
        "traceback_block",
        "operator",
        "attempt_table",
        "enqueued",
        "due",
        "started",
        "finished",
        "waited",
        "ran",
        "worker",
        "pool",
        "priority",
        "timeout",
        "retries",
        "retry_backoff",
        "lost_retries",
        "attempts",
    )

    @admin.action(description="Retry the selected FAILED tasks", permissions=["operate"])
    def retry(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Run FAILED tasks again, a new attempt of the same call."""
        self._act(request, queryset, control.retry, "retried", TaskStatus.FAILED)

    @admin.action(description="Cancel the selected READY tasks", permissions=["operate"])
    def cancel(self, request: HttpRequest, queryset: QuerySet) -> None:
        """End READY tasks before they start."""
        self._act(request, queryset, control.cancel, "cancelled", TaskStatus.READY)

    @admin.action(
        description="Terminate the selected RUNNING tasks (kill their workers)",
        permissions=["operate"],
    )
    def terminate(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Ask the servers to kill the workers of RUNNING tasks."""
        self._act(request, queryset, control.terminate, "terminated", TaskStatus.RUNNING)

    def _act(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        verb: Callable[[list[int], str], list[int]],
        done: str,
        wanted: str,
    ) -> None:
        """Call a verb of leek.control on the selected tasks; log it and say what it did."""
        selected = list(queryset.values_list("id", flat=True))
        acted = verb(selected, request.user.get_username())
        if acted:
            log_action(request, Task.objects.filter(id__in=acted), done)
            self.message_user(
                request,
                f"{done.capitalize()} {_ids(acted)}"
                + (
                    " (the server holding each stops it within seconds)."
                    if done == "terminated"
                    else "."
                ),
                messages.SUCCESS,
            )
        skipped = sorted(set(selected) - set(acted))
        if skipped:
            self.message_user(
                request,
                f"Not {done}: {_ids(skipped)}; only {wanted} tasks can be.",
                messages.WARNING,
            )

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Let retry, cancel and terminate those who may change tasks."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        """Leave out the columns no list cell shows (a task's page loads them when asked)."""
        return super().get_queryset(request).defer("result", "history")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """Find a task by its id, or tasks by part of their callable's path."""
        term = search_term.strip()
        if term.isdigit():
            return queryset.filter(id=int(term)), False
        return super().get_search_results(request, queryset, term)

    @admin.display(description="status", ordering="status")
    def status_badge(self, task: Task) -> SafeString:
        """Show the status in its colour."""
        return format_html(
            '<span class="leek-status leek-{}">{}</span>', task.status.lower(), task.status
        )

    @admin.display(description="call")
    def call(self, task: Task) -> SafeString:
        """Show the whole call as Python."""
        return format_html(
            '<code class="leek-code">{}</code>',
            calls.call_text(task.callable_path, task.payload, task.encoding == Encoding.JSON),
        )

    @admin.display(description="call", ordering="callable_path")
    def call_short(self, task: Task) -> SafeString:
        """Show the call as Python, cut when long."""
        return cut(
            calls.call_text(task.callable_path, task.payload, task.encoding == Encoding.JSON),
            CALL_CHARS,
        )

    @admin.display(description="result or error")
    def outcome(self, task: Task) -> SafeString | str:
        """Show the return value of a success, or the error of a failure."""
        if task.status == TaskStatus.SUCCESSFUL:
            return format_html(
                '<code class="leek-code">{}</code>',
                calls.value_text(task.result, task.encoding == Encoding.JSON),
            )
        if task.exception_class_path or task.traceback:
            return format_html('<code class="leek-code">{}</code>', task.exception_message)
        return "-"

    @admin.display(description="traceback")
    def traceback_block(self, task: Task) -> SafeString | str:
        """Show the traceback as it was printed, indentation kept."""
        if not task.traceback:
            return "-"
        return format_html('<pre class="leek-traceback">{}</pre>', task.traceback)

    @admin.display(description="operator")
    def operator(self, task: Task) -> str:
        """Say what an operator last did to the task, who and when."""
        if not task.control_action:
            return "-"
        return format_html(
            "{} by {} at {}", task.control_action, task.control_by, moment(task.control_at)
        )

    @admin.display(description="error")
    def error_short(self, task: Task) -> SafeString | str:
        """Show the last line of the error, cut when long."""
        return cut(task.exception_message, ERROR_CHARS) if task.traceback else ""

    @admin.display(description="attempts")
    def attempt_table(self, task: Task) -> SafeString | str:
        """List every attempt: its worker, times and error."""
        attempts = task.attempt_list
        if not attempts:
            return "none yet"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    number,
                    attempt.worker,
                    moment(attempt.started_at),
                    moment(attempt.finished_at),
                    duration(attempt.started_at, attempt.finished_at),
                    format_html("<pre class='leek-traceback'>{}</pre>", attempt.traceback)
                    if attempt.traceback
                    else "",
                )
                for number, attempt in enumerate(attempts, 1)
            ),
        )
        return format_html(
            '<table class="leek-attempts"><thead><tr><th>#</th><th>worker</th><th>started</th>'
            "<th>finished</th><th>ran</th><th>error</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="prio", ordering="priority")
    def prio(self, task: Task) -> int:
        """Show the priority under a short heading (the list is narrow)."""
        return task.priority

    @admin.display(description="enqueued", ordering="enqueued_at")
    def enqueued(self, task: Task) -> str:
        """Show when the task was saved, to the second."""
        return moment(task.enqueued_at)

    @admin.display(description="due (run after)")
    def due(self, task: Task) -> str:
        """Show when the task may run, to the second."""
        return moment(task.run_after)

    @admin.display(description="started")
    def started(self, task: Task) -> str:
        """Show when the latest attempt started."""
        return moment(task.started_at)

    @admin.display(description="finished")
    def finished(self, task: Task) -> str:
        """Show when the task ended."""
        return moment(task.finished_at)

    @admin.display(description="waited")
    def waited(self, task: Task) -> str:
        """Show how long the task waited between its enqueueing and its latest start."""
        return duration(task.enqueued_at, task.started_at)

    @admin.display(description="ran")
    def ran(self, task: Task) -> str:
        """Show how long the latest attempt ran."""
        return duration(task.started_at, task.finished_at)

    @admin.display(description="worker", ordering="worker_pid")
    def worker(self, task: Task) -> SafeString | str:
        """Show the worker that ran the latest attempt, as host:pid."""
        if not task.worker_pid:
            return "-"
        # <wbr>: a narrow column breaks after the host.
        return format_html("{}:<wbr>{}", task.worker_host, task.worker_pid)

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Tasks are offloaded from code, not typed in."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Rows are the record of what ran; they are not edited."""
        return False


def _ids(task_ids: list[int]) -> str:
    """Name a few task ids, and how many there are."""
    shown = ", ".join(str(i) for i in task_ids[:10])
    more = f" and {len(task_ids) - 10} more" if len(task_ids) > 10 else ""
    noun = "task" if len(task_ids) == 1 else "tasks"
    return f"{len(task_ids)} {noun} ({shown}{more})"


admin.site.register(Server, ServerAdmin)
admin.site.register(Schedule, ScheduleAdmin)
