"""The admin of the task table: a list that reads at a glance and a page per task.

Runs in the web process. Rows are never edited here; the stored call and return value are
shown as Python text read from the pickle without unpickling it (leek.calls).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from leek import calls
from leek.adminlist import (
    CallableFilter,
    EstimatedCountPaginator,
    PoolFilter,
    cut,
    duration,
    moment,
)
from leek.models import Task, TaskStatus

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
        "priority",
        "enqueued",
        "waited",
        "ran",
        "worker",
        "error_short",
    )
    list_display_links = ("id", "call_short")
    list_filter = (
        "status",
        PoolFilter,
        CallableFilter,
        ("enqueued_at", admin.DateFieldListFilter),
    )
    search_fields = ("callable_path",)
    search_help_text = "A task id, or part of a callable's dotted path."
    ordering = ("-id",)
    list_per_page = 50
    paginator = EstimatedCountPaginator
    # No COUNT(*) of the whole table on each page load (issue 11: a million rows).
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    fieldsets = (
        (None, {"fields": ("status_badge", "call", "outcome", "traceback_block")}),
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
            '<code class="leek-code">{}</code>', calls.call_text(task.callable_path, task.payload)
        )

    @admin.display(description="call", ordering="callable_path")
    def call_short(self, task: Task) -> SafeString:
        """Show the call as Python, cut when long."""
        return cut(calls.call_text(task.callable_path, task.payload), CALL_CHARS)

    @admin.display(description="result or error")
    def outcome(self, task: Task) -> SafeString | str:
        """Show the return value of a success, or the error of a failure."""
        if task.status == TaskStatus.SUCCESSFUL:
            return format_html('<code class="leek-code">{}</code>', calls.value_text(task.result))
        if task.exception_class_path or task.traceback:
            return format_html('<code class="leek-code">{}</code>', task.exception_message)
        return "-"

    @admin.display(description="traceback")
    def traceback_block(self, task: Task) -> SafeString | str:
        """Show the traceback as it was printed, indentation kept."""
        if not task.traceback:
            return "-"
        return format_html('<pre class="leek-traceback">{}</pre>', task.traceback)

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
    def worker(self, task: Task) -> str:
        """Show the worker that ran the latest attempt, as host:pid."""
        return f"{task.worker_host}:{task.worker_pid}" if task.worker_pid else "-"

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Tasks are offloaded from code, not typed in."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Rows are the record of what ran; they are not edited."""
        return False
