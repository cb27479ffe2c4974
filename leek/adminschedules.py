"""The admin of periodic tasks: each schedule, when it runs next, its last run, its switch.

Runs in the web process. Schedules are declared in code or settings and written by the
workers, so nothing here edits one; the actions Enable and Disable call leek.control, which
records the operator's name on the row (the state holds across restarts and deploys), and
log themselves in the admin's log. Registered by leek.admin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from leek import control
from leek.adminlist import log_action, moment
from leek.models import Schedule, ScheduleRun, Task


class ScheduleAdmin(admin.ModelAdmin):
    """List the schedules with their next and last run; enable or disable them."""

    list_display = (
        "name",
        "expression",
        "callable_path",
        "state",
        "next_run",
        "last_run",
        "last_outcome",
        "changed",
    )
    list_filter = ("enabled", "declared", "source")
    search_fields = ("name", "callable_path")
    actions = ("enable", "disable")
    readonly_fields = (
        "name", "source", "callable_path", "cron", "every", "args", "kwargs", "pool",
        "priority", "timeout", "retries", "retry_backoff", "lost_retries", "catch_up",
        "overlap", "declared", "recorded_at", "enabled", "changed_by", "changed_at", "since",
        "last_slot",
    )  # fmt: skip

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        """Read each schedule's last run (the last slot that enqueued a task) with it."""
        runs = ScheduleRun.objects.filter(schedule=OuterRef("pk"), task_id__isnull=False)
        last = runs.order_by("-slot")
        return (
            super()
            .get_queryset(request)
            .annotate(
                last_run_slot=Subquery(last.values("slot")[:1]),
                last_run_task=Subquery(last.values("task_id")[:1]),
            )
        )

    @admin.action(description="Enable the selected schedules", permissions=["operate"])
    def enable(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Let schedules run again from their next slot."""
        self._act(request, queryset, control.enable_schedules, "enabled")

    @admin.action(description="Disable the selected schedules", permissions=["operate"])
    def disable(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Stop schedules from running on every server until enabled."""
        self._act(request, queryset, control.disable_schedules, "disabled")

    def _act(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        verb: Callable[[list[str], str], list[str]],
        done: str,
    ) -> None:
        """Call a verb of leek.control on the selected schedules; log it and say what it did."""
        selected = list(queryset.values_list("name", flat=True))
        acted = verb(selected, request.user.get_username())
        if acted:
            log_action(request, Schedule.objects.filter(name__in=acted), done)
            self.message_user(request, f"{done.capitalize()}: {', '.join(acted)}.")
        left = sorted(set(selected) - set(acted))
        if left:
            self.message_user(request, f"Already {done}: {', '.join(left)}.", messages.WARNING)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Let enable and disable those who may change schedules."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    @admin.display(description="state", ordering="enabled")
    def state(self, schedule: Schedule) -> str:
        """Say whether it runs: enabled, disabled, or no longer declared."""
        if not schedule.declared:
            return "gone (no longer declared)"
        return "enabled" if schedule.enabled else "disabled"

    @admin.display(description="next run")
    def next_run(self, schedule: Schedule) -> str:
        """Show when its next slot is."""
        return moment(schedule.next_at())

    @admin.display(description="last run", ordering="last_run_slot")
    def last_run(self, schedule: Schedule) -> str:
        """Show the slot of the last run that enqueued a task."""
        return moment(getattr(schedule, "last_run_slot", None))

    @admin.display(description="outcome")
    def last_outcome(self, schedule: Schedule) -> SafeString | str:
        """Show the status of the last run's task, linked to the task's page."""
        task_id = getattr(schedule, "last_run_task", None)
        if task_id is None:
            return "-"
        status = Task.objects.filter(pk=task_id).values_list("status", flat=True).first()
        if status is None:
            return f"task {task_id} (deleted)"
        url = reverse("admin:leek_task_change", args=[task_id])
        return format_html(
            '<a href="{}"><span class="leek-status leek-{}">{}</span></a>',
            url,
            status.lower(),
            status,
        )

    @admin.display(description="switched by")
    def changed(self, schedule: Schedule) -> str:
        """Say who last enabled or disabled it."""
        return schedule.changed_by or "-"

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Schedules are declared in code or settings, not typed in."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Refuse: a schedule leaves the code or the settings; here it is only switched off."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Schedules change in code or settings; only their switch changes here (actions)."""
        return False
