"""A Python client for notifykit servers: stays connected, resubscribes, resumes.

::

    from notifykit.client import NotifyClient

    async with NotifyClient("wss://example.com/notify/ws", token_factory=get_token) as client:
        await client.subscribe("team:7")
        async for notification in client:
            print(notification.event, notification.data)

Needs the ``client`` extra (``pip install 'notifykit[client]'``: the ``websockets`` library) and
runs on asyncio. See ``docs/clients.md``; ``notifykit/static/client.js`` is the same client for
browsers.
"""

from ._backoff import Backoff
from ._client import NotifyClient
from ._errors import ClientClosed, ClientError, RequestRefused
from ._positions import Position, PositionBook
from ._state import ConnectionState, StateChange

__all__ = [
    "Backoff",
    "ClientClosed",
    "ClientError",
    "ConnectionState",
    "NotifyClient",
    "Position",
    "PositionBook",
    "RequestRefused",
    "StateChange",
]
