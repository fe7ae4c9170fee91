"""notifykit: real-time notifications to authenticated users over websockets, scaled by Redis.

::

    from notifykit import Hub, JWTAuthenticator

    hub = Hub()                                   # in-memory; Hub(RedisPropagator(url)) to scale
    app.mount("/notify", hub.asgi_app(JWTAuthenticator(secret=SECRET), api_key=API_KEY))
    ...
    await hub.notify_user("42", "order.shipped", {"order": 7})
"""

from .connection import Connection
from .errors import (
    AuthenticationError,
    ConfigurationError,
    Forbidden,
    InvalidNotification,
    NotifyKitError,
    PropagationError,
    ProtocolError,
    TokenExpired,
    TransportClosed,
)
from .gateway import Gateway
from .hub import Hub
from .jwt import JWTAuthenticator, mint_token
from .memory import MemoryBus, MemoryPropagator, MemorySocketState
from .model import Handshake, Principal, ToAuthenticated, ToEveryone, ToTopic, ToUsers
from .protocols import Authenticator, Propagator, SocketState, TopicPolicy, Transport
from .topics import claim_topics_policy
from .wire import SUBPROTOCOL, CloseCode

__version__ = "0.1.0"

__all__ = [
    "SUBPROTOCOL",
    "AuthenticationError",
    "Authenticator",
    "CloseCode",
    "ConfigurationError",
    "Connection",
    "Forbidden",
    "Gateway",
    "Handshake",
    "Hub",
    "InvalidNotification",
    "JWTAuthenticator",
    "MemoryBus",
    "MemoryPropagator",
    "MemorySocketState",
    "NotifyKitError",
    "Principal",
    "PropagationError",
    "Propagator",
    "ProtocolError",
    "SocketState",
    "ToAuthenticated",
    "ToEveryone",
    "ToTopic",
    "ToUsers",
    "TokenExpired",
    "TopicPolicy",
    "Transport",
    "TransportClosed",
    "claim_topics_policy",
    "mint_token",
]
