"""Views a site mounts in its urls.py: the Prometheus metrics (see leek.urls).

Runs in the web process. Reads the database only; no view talks to a worker or a server.
"""

from __future__ import annotations

import hmac

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from leek import conf
from leek import metrics as exposition


def _allowed(request: HttpRequest) -> bool:
    """Let in staff users, and scrapers that present LEEK["metrics_token"] as a bearer token."""
    token = conf.get().metrics_token
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if token and scheme.lower() == "bearer":
        return hmac.compare_digest(presented.strip().encode(), token.encode())
    user = getattr(request, "user", None)
    return bool(user and user.is_active and user.is_staff)


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Serve leek's metrics in Prometheus's text format (staff, or the bearer token)."""
    if not _allowed(request):
        return HttpResponse(
            "leek metrics: log in as staff, or send the header "
            "Authorization: Bearer <LEEK['metrics_token']>\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    text = exposition.render(exposition.collect())
    return HttpResponse(text, content_type=exposition.CONTENT_TYPE)
