"""The ASGI adapter: a mountable app for Starlette, FastAPI or any ASGI server.

::

    from notifykit import Hub, JWTAuthenticator
    from notifykit.adapters.asgi import NotifyApp

    hub = Hub()
    app.mount("/notify", NotifyApp(hub, JWTAuthenticator(secret=SECRET), api_key=API_KEY))

* :class:`NotifyApp` — the whole service as one ASGI app: ``/ws`` (websocket), ``POST
  /publish``, ``/healthz``, ``/readyz``, ``/metrics``, ``/presence`` (needs the ``starlette``
  extra).
* :class:`WebSocketEndpoint` — only the websocket endpoint, as a plain ASGI app (no
  Starlette needed), for hosts that route websockets themselves.
* :class:`ASGITransport` and :func:`handshake_from_scope` — the pieces both are made of.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .transport import ASGITransport, WebSocketEndpoint, handshake_from_scope

if TYPE_CHECKING:
    from .app import NotifyApp

__all__ = ["ASGITransport", "NotifyApp", "WebSocketEndpoint", "handshake_from_scope"]


def __getattr__(name: str) -> Any:
    # NotifyApp needs Starlette; the transport and endpoint do not.
    if name == "NotifyApp":
        from .app import NotifyApp

        return NotifyApp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
