"""notifykit: real-time notifications to authenticated users over websockets, scaled by Redis.

::

    from notifykit import Hub, JWTAuthenticator
    from notifykit.adapters.asgi import NotifyApp

    hub = Hub()                                   # in-memory; Hub(RedisPropagator(url)) to scale
    app.mount("/notify", NotifyApp(hub, JWTAuthenticator(secret=SECRET), api_key=API_KEY))
    ...
    await hub.notify_user("42", "order.shipped", {"order": 7})

This module exports what application code uses: the :class:`Hub`, authentication, targets and
errors. Extension points come from the module of their role: protocols from
:mod:`notifykit.protocols`, the in-memory implementations from :mod:`notifykit.memory`,
``Gateway``/``Connection`` from :mod:`notifykit.gateway`/:mod:`notifykit.connection`, the wire
protocol from :mod:`notifykit.wire`, adapters from :mod:`notifykit.adapters`, Redis from
``notifykit.redis``. PyJWT is imported only when a JWT helper is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    AuthenticationError,
    ConfigurationError,
    HistoryOff,
    InvalidNotification,
    NotifyKitError,
    NotRunning,
    PropagationError,
    ProtocolError,
    TokenExpired,
    TransportClosed,
)
from .hub import Hub
from .model import Principal, ToAuthenticated, ToEveryone, ToTopic, ToUsers
from .topics import claim_topics_policy
from .wire import SUBPROTOCOL, CloseCode

if TYPE_CHECKING:
    from .jwt import JWTAuthenticator, mint_token

__version__ = "0.1.0"

__all__ = [
    "SUBPROTOCOL",
    "AuthenticationError",
    "CloseCode",
    "ConfigurationError",
    "HistoryOff",
    "Hub",
    "InvalidNotification",
    "JWTAuthenticator",
    "NotRunning",
    "NotifyKitError",
    "Principal",
    "PropagationError",
    "ProtocolError",
    "ToAuthenticated",
    "ToEveryone",
    "ToTopic",
    "ToUsers",
    "TokenExpired",
    "TransportClosed",
    "claim_topics_policy",
    "mint_token",
]

_LAZY = {"JWTAuthenticator", "mint_token"}


def __getattr__(name: str) -> Any:
    # The JWT helpers need PyJWT (and cryptography for RSA/EC keys): imported on first use, so
    # `import notifykit` stays light for apps that authenticate otherwise.
    if name in _LAZY:
        from . import jwt

        value = getattr(jwt, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
