"""HTTP routes: ``/healthz`` reports the hub's status and counts."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path

from .notify import hub


def healthz(request: HttpRequest) -> JsonResponse:
    state = hub.state
    body = {
        "status": "ok" if hub.healthy else "degraded",
        "connections": state.connection_count,
        "users": state.user_count,
    }
    return JsonResponse(body, status=200 if hub.healthy else 503)


urlpatterns = [path("healthz", healthz)]
