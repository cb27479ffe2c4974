"""The parts of the task list that keep it fast on a table of millions: count, filters, columns.

Runs in the web process. Django's admin counts every matching row on each page load and lists
a filter's choices with `SELECT DISTINCT` over the whole table; on a million rows each costs a
scan. Here the count is exact up to `EXACT_COUNT_UP_TO` rows and an estimate past it, and a
filter's choices are found by one index seek per distinct value.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Min, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString

# Up to this many matching rows, the list says exactly how many.
EXACT_COUNT_UP_TO = 10_000
# A filter lists at most this many values (pools, callables).
FILTER_CHOICES = 100


class EstimatedCountPaginator(Paginator):
    """Count exactly up to `EXACT_COUNT_UP_TO` rows; past that, estimate (PostgreSQL's planner)."""

    estimated = False

    @cached_property
    def count(self) -> int:
        """Return the number of rows, or an estimate of it on a big table."""
        rows = self.object_list
        counted = rows.order_by()[: EXACT_COUNT_UP_TO + 1].count()
        if counted <= EXACT_COUNT_UP_TO:
            return counted
        estimate = _planner_estimate(rows)
        if estimate is None:
            # No estimate to be had (SQLite counts a million rows in milliseconds).
            return rows.count()
        self.estimated = True
        return max(estimate, counted)


def _planner_estimate(rows: QuerySet) -> int | None:
    """Return the rows PostgreSQL's planner expects the query to return, or None elsewhere."""
    if connections[rows.db].vendor != "postgresql":
        return None
    plan = json.loads(rows.order_by().explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


def distinct_values(rows: QuerySet, field: str, limit: int = FILTER_CHOICES) -> list[str]:
    """Return the first `limit` distinct values of `field`, one index seek each.

    A loose index scan: `min(field) where field > previous`, so a table of a million rows
    with ten pools costs ten seeks on the index of `field`, not a scan.
    """
    found: list[str] = []
    rows = rows.order_by()
    while len(found) < limit:
        following = rows.filter(**{f"{field}__gt": found[-1]}) if found else rows
        value = following.aggregate(value=Min(field))["value"]
        if value is None:
            break
        found.append(value)
    return found


class DistinctValueFilter(admin.SimpleListFilter):
    """Filter on the values a column holds, found by `distinct_values`."""

    field = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        """Return the column's values, with the one selected even if it is past the limit."""
        values = distinct_values(model_admin.model.objects.all(), self.field)
        selected = self.value()
        if selected and selected not in values:
            values.append(selected)
        return [(value, value) for value in values]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        """Keep the rows holding the selected value."""
        value = self.value()
        return queryset.filter(**{self.field: value}) if value else queryset


class PoolFilter(DistinctValueFilter):
    """Filter the tasks on their pool."""

    title = "pool"
    parameter_name = field = "pool"


class CallableFilter(DistinctValueFilter):
    """Filter the tasks on their callable."""

    title = "callable"
    parameter_name = field = "callable_path"


def moment(value: datetime | None) -> str:
    """Show a time to the second in the current time zone, with its microseconds on hover."""
    if value is None:
        return "-"
    local = timezone.localtime(value)
    return format_html(
        '<time datetime="{}" title="{}"><span>{}</span> <span>{}</span></time>',
        value.isoformat(),
        local.isoformat(sep=" "),
        local.strftime("%Y-%m-%d"),
        local.strftime("%H:%M:%S"),
    )


def duration(start: datetime | None, end: datetime | None) -> str:
    """Show the time from `start` to `end` for people: 850 ms, 4.2 s, 3 min 05 s, 2 h 10 min."""
    if start is None or end is None:
        return "-"
    return seconds_text((end - start).total_seconds())


def seconds_text(seconds: float) -> str:
    """Show a number of seconds for people."""
    if seconds < 1:
        return f"{max(seconds, 0) * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = timedelta(seconds=round(seconds))
    minutes, secs = divmod(int(whole.total_seconds()), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s"


def cut(text: str, limit: int) -> SafeString:
    """Show `text` cut to `limit` characters, the whole of it on hover."""
    if len(text) <= limit:
        return format_html("{}", text)
    return format_html('<span title="{}">{}…</span>', text, text[: limit - 1])


def log_action(request: HttpRequest, rows: QuerySet, done: str) -> None:
    """Record in the admin's history that the operator of `request` `done` these rows."""
    LogEntry.objects.log_actions(
        user_id=request.user.pk,
        queryset=rows,
        action_flag=CHANGE,
        change_message=f"{done.capitalize()} from the admin.",
    )
