"""The mountable ASGI app: the websocket endpoint, the HTTP publish API, health and metrics.

::

    app.mount("/notify", NotifyApp(hub, JWTAuthenticator(secret=...), api_key="..."))

Routes (relative to where it is mounted):

* ``GET /ws`` — the websocket endpoint (a plain ASGI handler, no framework class per message);
* ``POST /publish`` — publish one notification (``Authorization: Bearer <api key>``);
* ``GET /healthz`` — always 200: ``{"status": "ok" | "degraded", "connections", "users"}``;
* ``GET /readyz`` — 200 when ready, 503 while degraded (for load balancers);
* ``GET /metrics`` — Prometheus text format (:mod:`.metrics`; needs the ``metrics`` extra,
  else it answers 501 saying how to enable it);
* ``GET /presence/<user_id>`` — ``{"user", "online", "connections"}`` across every instance;
  ``GET /presence`` — ``{"online": <users online>}`` (both need the API key);
* ``GET /client.js`` — the browser client (``notifykit/static/client.js``).

When it is the root ASGI app (as under ``notifykit serve``) it also runs the hub for the
server's lifespan; when mounted, the host app enters the hub in its own lifespan.
"""

from __future__ import annotations

import hmac
import importlib.util
import json
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...errors import (
    ConfigurationError,
    HistoryOff,
    InvalidNotification,
    NotRunning,
    PropagationError,
)
from ...gateway import Gateway
from ...model import topic_key, user_key, validate_topic, validate_user_id
from .lifespan import run_lifespan
from .publish import parse_publish
from .static import client_routes
from .transport import WebSocketEndpoint

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from prometheus_client.registry import CollectorRegistry
    from starlette.requests import Request

    from ...hub import Hub
    from ...protocols import Authenticator, TopicPolicy
    from .transport import Receive, Scope, Send

__all__ = ["NotifyApp"]

METRICS_MISSING = (
    "metrics need prometheus-client: pip install 'notifykit[metrics]' and restart the server"
)


class NotifyApp:
    """The ASGI app serving ``hub``; see the module docstring for routes.

    ``authenticator`` verifies websocket clients' tokens. ``api_key`` is the key (or keys, to
    rotate them without downtime) accepted by ``POST /publish`` and ``/presence``; with none,
    those answer 403. ``max_publish_bytes`` bounds a publish body (413 beyond). The other
    keyword arguments configure the :class:`~notifykit.gateway.Gateway` (``allowed_origins``,
    ``allow_anonymous``, ``topic_policy``, ``queue_size``, ``max_frame_bytes``...); ``gateway``
    is that gateway.
    """

    def __init__(
        self,
        hub: Hub,
        authenticator: Authenticator,
        *,
        api_key: str | Iterable[str] | None = None,
        allowed_origins: Iterable[str] = (),
        allow_anonymous: bool = False,
        topic_policy: TopicPolicy | None = None,
        max_publish_bytes: int = 1024 * 1024,
        **gateway_options: Any,
    ) -> None:
        self.gateway = Gateway(
            hub,
            authenticator,
            topic_policy=topic_policy,
            allow_anonymous=allow_anonymous,
            allowed_origins=allowed_origins,
            **gateway_options,
        )
        self.hub = hub
        keys = [api_key] if isinstance(api_key, str) else list(api_key or ())
        self.api_keys = tuple(key.encode() for key in keys if key)
        if not isinstance(max_publish_bytes, int) or max_publish_bytes < 1:
            raise ConfigurationError(
                f"max_publish_bytes must be at least 1, not {max_publish_bytes!r}"
            )
        self.max_publish_bytes = max_publish_bytes
        self.websocket = WebSocketEndpoint(self.gateway)
        self.metrics_registry = _metrics_registry(hub)
        """The ``prometheus_client`` registry ``GET /metrics`` renders (this app's own), or
        None without the ``metrics`` extra."""
        self.http = Starlette(
            routes=[
                Route("/publish", self.publish, methods=["POST"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route("/metrics", self.metrics, methods=["GET"]),
                Route("/history", self.history, methods=["GET"]),
                Route("/presence", self.presence_summary, methods=["GET"]),
                Route("/presence/{user_id:path}", self.presence, methods=["GET"]),
                *client_routes(),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch websocket, lifespan and HTTP scopes."""
        kind = scope["type"]
        if kind == "websocket":
            if _route_path(scope) in ("/ws", "/ws/"):
                await self.websocket(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1000})  # a 403 handshake reply
        elif kind == "lifespan":
            await run_lifespan(self.hub, receive, send)
        else:
            await self.http(scope, receive, send)

    # --- HTTP -----------------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        given = key.strip().encode()
        # Compare against every key so timing does not tell which one (or whether any) matched.
        return sum(hmac.compare_digest(given, k) for k in self.api_keys) > 0

    async def publish(self, request: Request) -> Response:
        """``POST /publish``: 202 ``{"id"}``, or 400/401/403/413/503 with a clear message."""
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        body = await _read_body(request, self.max_publish_bytes)
        if body is None:
            return _error(413, "too_large", f"body larger than {self.max_publish_bytes} bytes")
        try:
            req = parse_publish(body)
            notification_id = await self.hub.publish(
                req.target, req.event, req.data, exclude=req.exclude
            )
        except InvalidNotification as exc:
            return _error(400, "bad_request", str(exc))
        except PropagationError as exc:
            return _error(503, "unavailable", f"could not propagate the notification: {exc}")
        except NotRunning as exc:
            return _error(503, "unavailable", str(exc))
        return JSONResponse({"id": notification_id}, status_code=202)

    async def presence(self, request: Request) -> Response:
        """``GET /presence/<user_id>``: is the user online anywhere, with how many connections."""
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        user_id = request.path_params["user_id"]
        try:
            connections = await self.hub.connections_of(user_id)
        except (PropagationError, NotRunning) as exc:
            return _error(503, "unavailable", f"presence is unavailable: {exc}")
        return JSONResponse(
            {"user": user_id, "online": bool(connections), "connections": len(connections)}
        )

    async def history(self, request: Request) -> Response:
        """``GET /history?user=<id>`` (or ``?topic=<name>``) with optional ``after`` (an
        offset, default 0) and ``limit`` (1-1000, default 100): the stream's notifications
        after ``after``, in offset order, for services that show an inbox."""
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        try:
            stream, after, limit = _history_query(request.query_params)
            page = await self.hub.history(stream, after=after, limit=limit)
        except HistoryOff as exc:
            return _error(404, "history_off", str(exc))
        except InvalidNotification as exc:
            return _error(400, "bad_request", str(exc))
        except (PropagationError, NotRunning) as exc:
            return _error(503, "unavailable", f"history is unavailable: {exc}")
        # The frames are JSON already: they are joined, not decoded and encoded again.
        head = json.dumps(
            {"stream": page.stream, "epoch": page.epoch, "last": page.last, "first": page.first}
        )
        body = f'{head[:-1]}, "notifications": [{",".join(page.notifications)}]}}'
        return Response(body, media_type="application/json")

    async def presence_summary(self, request: Request) -> Response:
        """``GET /presence``: how many users are online anywhere."""
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        try:
            count = await self.hub.online_count()
        except (PropagationError, NotRunning) as exc:
            return _error(503, "unavailable", f"presence is unavailable: {exc}")
        return JSONResponse({"online": count})

    def _refusal(self, request: Request) -> Response | None:
        if not self.api_keys:
            return _error(403, "disabled", "the HTTP API is disabled: configure an API key")
        if not self._authorized(request):
            return _error(401, "unauthorized", "missing or invalid API key")
        return None

    async def healthz(self, request: Request) -> Response:
        """``GET /healthz``: always 200, with this instance's status and counts."""
        return JSONResponse(self._health())

    async def readyz(self, request: Request) -> Response:
        """``GET /readyz``: 200 when this instance can serve, 503 while degraded."""
        health = self._health()
        return JSONResponse(health, status_code=200 if health["status"] == "ok" else 503)

    async def metrics(self, request: Request) -> Response:
        """``GET /metrics``: the hub's metrics in Prometheus text format (OpenMetrics if the
        ``Accept`` header asks for it); 501 without the ``metrics`` extra."""
        if self.metrics_registry is None:
            return _error(501, "metrics_unavailable", METRICS_MISSING)
        from .metrics import render

        body, content_type = render(self.metrics_registry, request.headers.get("accept"))
        return Response(body, headers={"content-type": content_type})

    def _health(self) -> dict[str, Any]:
        state = self.hub.state
        return {
            "status": "ok" if self.hub.healthy else "degraded",
            "connections": state.connection_count,
            "users": state.user_count,
        }


def _metrics_registry(hub: Hub) -> CollectorRegistry | None:
    """A registry of this app's own for ``hub`` (None without ``prometheus_client``)."""
    if importlib.util.find_spec("prometheus_client") is None:
        return None
    from .metrics import metrics_registry

    return metrics_registry(hub)


_MAX_HISTORY_LIMIT = 1000


def _history_query(params: Mapping[str, str]) -> tuple[str, int, int]:
    """``(stream, after, limit)`` from ``GET /history``'s query; InvalidNotification if bad."""
    targets = [name for name in ("user", "topic") if name in params]
    if len(targets) != 1:
        raise InvalidNotification('give exactly one of "user" or "topic"')
    if targets[0] == "user":
        stream = user_key(validate_user_id(params["user"]))
    else:
        stream = topic_key(validate_topic(params["topic"]))
    after = _whole(params.get("after", "0"), "after", 2**63 - 1)
    limit = _whole(params.get("limit", "100"), "limit", _MAX_HISTORY_LIMIT)
    return stream, after, limit


def _whole(text: str, name: str, most: int) -> int:
    if not text.isdigit() or int(text) > most:
        raise InvalidNotification(f'"{name}" must be a whole number from 0 to {most}')
    return int(text)


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": code, "message": message}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _route_path(scope: Scope) -> str:
    """The path below the mount point (as Starlette computes it for mounted apps)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path
