"""The admin's live page: each server with its workers, the READY backlog, paused pools.

Runs in the web process. Everything is read from the database (the servers' heartbeat rows,
the task table, the pauses); no page load talks to a server or a worker. The page is the
"Servers" entry of the admin index; it redraws itself from `live.json` every few seconds.
Pause and Resume are POSTs that call leek.control.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_POST

from leek import control
from leek.adminlist import distinct_values, seconds_text
from leek.models import Task

# Seconds between two redraws of the page.
REFRESH_SECONDS = 2


def _since(moment: datetime | str | None, now: datetime) -> str:
    """Say how long ago `moment` was ("-" if never)."""
    if moment is None or moment == "":
        return "-"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return seconds_text((now - moment).total_seconds())


def _local(moment: datetime | None) -> str:
    return "-" if moment is None else timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S")


def _worker(worker: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Return what one line of a server's worker table shows."""
    return {
        "pid": worker.get("pid"),
        "state": worker.get("state", ""),
        "generation": worker.get("generation", ""),
        "task": worker.get("task"),
        "callable": worker.get("callable") or "",
        "since": _since(worker.get("task_since"), now) if worker.get("task") else "",
        "rss_mb": worker.get("rss_mb", ""),
        "tasks_done": worker.get("tasks_done", 0),
    }


def snapshot() -> dict[str, Any]:
    """Read what the live page shows: servers, their workers, backlog, pools and pauses."""
    now = timezone.now()
    servers = []
    for server in control.servers():
        servers.append(
            {
                "host": server.host,
                "pid": server.pid,
                "address": server.address or "-",
                "pools": ", ".join(server.pools) or "every pool",
                "started": _local(server.started_at),
                "up_for": _since(server.started_at, now),
                "beat_ago": _since(server.heartbeat_at, now),
                "stopped": _local(server.stopped_at) if server.stopped_at else "",
                "stale": server.stale,
                "workers": [_worker(w, now) for w in server.workers],
                "restarts": {k: v for k, v in server.restarts.items() if v},
            }
        )
    paused = control.paused_pools()
    backlog = control.backlog()
    pools = sorted(
        {b.pool for b in backlog} | paused | set(distinct_values(Task.objects.all(), "pool"))
    )
    return {
        "servers": servers,
        "backlog": [
            {
                "pool": b.pool,
                "ready": b.ready,
                "oldest": _since(b.oldest, now) if b.oldest else "-",
            }
            for b in backlog
        ],
        "pools": [{"name": pool, "paused": pool in paused} for pool in pools],
        "now": _local(now),
    }


class ServerAdmin(admin.ModelAdmin):
    """The servers' rows, shown as the live page instead of a list."""

    def get_urls(self) -> list:
        """Add the page's JSON feed and its Pause and Resume to the admin's URLs."""
        wrap = self.admin_site.admin_view
        return [
            path("live.json", wrap(self.live_json), name="leek_server_live_json"),
            path("pause/", wrap(self.pause_view), name="leek_server_pause"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        """Show the live page."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "leek: servers, workers and backlog",
            "opts": self.opts,
            "body": self._body(request),
            "refresh_ms": REFRESH_SECONDS * 1000,
        }
        return TemplateResponse(request, "admin/leek/live.html", context)

    def live_json(self, request: HttpRequest) -> JsonResponse:
        """Return the page's body, drawn afresh, for the page to redraw itself."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        return JsonResponse({"html": self._body(request)})

    def _body(self, request: HttpRequest) -> str:
        context = {
            **snapshot(),
            "can_pause": self.has_pause_permission(request),
            "pause_url": reverse("admin:leek_server_pause", current_app=self.admin_site.name),
        }
        return render_to_string("admin/leek/live_body.html", context, request=request)

    @method_decorator(require_POST)
    def pause_view(self, request: HttpRequest) -> HttpResponse:
        """Pause or resume the pool named in the POST, then show the page again."""
        if not self.has_pause_permission(request):
            raise PermissionDenied
        pool = request.POST.get("pool", "").strip()
        verb = request.POST.get("verb", "")
        if not pool or any(c.isspace() for c in pool) or verb not in ("pause", "resume"):
            messages.error(request, "Name a pool (one word) and say pause or resume.")
        else:
            self._pause_or_resume(request, pool, verb)
        return HttpResponseRedirect(
            reverse("admin:leek_server_changelist", current_app=self.admin_site.name)
        )

    @staticmethod
    def _pause_or_resume(request: HttpRequest, pool: str, verb: str) -> None:
        user = request.user.get_username()
        changed = (control.pause if verb == "pause" else control.resume)(pool, user)
        done = "paused" if verb == "pause" else "resumed"
        if not changed:
            messages.warning(request, f"Pool {pool!r} was already {done}.")
            return
        LogEntry.objects.create(
            user_id=request.user.pk,
            object_repr=f"pool {pool}"[:200],
            action_flag=CHANGE,
            change_message=f"{done.capitalize()} pool {pool} from the admin.",
        )
        messages.success(request, f"Pool {pool!r} {done}.")

    def has_pause_permission(self, request: HttpRequest) -> bool:
        """Let those who may change tasks pause and resume pools."""
        return request.user.has_perm("leek.change_task")

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Servers write their own rows."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Servers write their own rows."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Leave the rows to the servers: each marks or removes its own when it stops."""
        return False
