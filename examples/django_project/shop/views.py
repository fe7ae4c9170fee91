"""The shop's views: a page that shows notifications live, and an ordinary synchronous view
that notifies the buyer when it ships an order."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_POST

from .notify import hub, notify_user_sync


@ensure_csrf_cookie
def index(request: HttpRequest) -> HttpResponse:
    return render(request, "shop/index.html")


@require_POST
@login_required
def ship(request: HttpRequest, order_id: int) -> JsonResponse:
    """Ship an order (a plain sync view, as in any Django app) and tell the buyer."""
    notification_id = notify_user_sync(
        str(request.user.pk), "order.shipped", {"order": order_id, "by": "view"}
    )
    return JsonResponse({"order": order_id, "notification": notification_id})


def healthz(request: HttpRequest) -> JsonResponse:
    """This process's notification hub: up, and how many connections it holds."""
    state = hub.state
    body = {
        "status": "ok" if hub.healthy or not hub.running else "degraded",
        "running": hub.running,
        "connections": state.connection_count,
        "users": state.user_count,
    }
    return JsonResponse(body)
