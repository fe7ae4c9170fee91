"""Running a hub for an ASGI server's lifetime, through the ASGI ``lifespan`` protocol.

:class:`NotifyApp <notifykit.adapters.asgi.NotifyApp>` does it when it is the root app; hosts
that route scopes themselves (Django Channels' ``ProtocolTypeRouter``) give the ``lifespan``
scope to a :class:`HubLifespan`::

    application = ProtocolTypeRouter({"http": ..., "websocket": ..., "lifespan": HubLifespan(hub)})
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ...hub import Hub
    from .transport import Receive, Scope, Send

__all__ = ["HubLifespan", "run_lifespan"]

logger = logging.getLogger("notifykit.asgi")


async def run_lifespan(hub: Hub, receive: Receive, send: Send) -> None:
    """Serve one ``lifespan`` scope: enter ``hub`` at startup (unless it already runs: then
    its owner closes it too) and close it at shutdown — every connection gets ``1001``."""
    await receive()  # lifespan.startup
    if hub.running:  # the host app runs the hub itself
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    try:
        await hub.__aenter__()
    except Exception as exc:
        logger.exception("hub failed to start")
        await send({"type": "lifespan.startup.failed", "message": str(exc)})
        return
    try:
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
    finally:
        await hub.aclose()
    await send({"type": "lifespan.shutdown.complete"})


class HubLifespan:
    """An ASGI app for the ``lifespan`` scope alone: runs ``hub`` from the server's startup to
    its shutdown (see :func:`run_lifespan`)."""

    __slots__ = ("hub",)

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a ``lifespan`` scope."""
        if scope["type"] != "lifespan":
            raise RuntimeError(f"HubLifespan serves lifespan scopes only, not {scope['type']!r}")
        await run_lifespan(self.hub, receive, send)
