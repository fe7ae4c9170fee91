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
* :class:`ConnectionAuthenticator` — log clients in with the host app's own session or
  cookie (a function of Starlette's ``HTTPConnection``) instead of a JWT (needs Starlette).
* :class:`HubLifespan` — runs a hub for the server's lifetime, for hosts that route the
  ``lifespan`` scope themselves (Django Channels' ``ProtocolTypeRouter``).
* :class:`ASGITransport` and :func:`handshake_from_scope` — the pieces both are made of.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .lifespan import HubLifespan
from .transport import ASGITransport, WebSocketEndpoint, handshake_from_scope

if TYPE_CHECKING:
    from .app import NotifyApp
    from .auth import ConnectionAuthenticator

__all__ = [
    "ASGITransport",
    "ConnectionAuthenticator",
    "HubLifespan",
    "NotifyApp",
    "WebSocketEndpoint",
    "handshake_from_scope",
]


def __getattr__(name: str) -> Any:
    # NotifyApp and ConnectionAuthenticator need Starlette; the rest does not.
    if name == "NotifyApp":
        from .app import NotifyApp

        return NotifyApp
    if name == "ConnectionAuthenticator":
        from .auth import ConnectionAuthenticator

        return ConnectionAuthenticator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
