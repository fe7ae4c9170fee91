"""One registered websocket connection, as the hub sees it: who, which keys, and its outbound queue.

The queue is bounded. Frames are *offered* to it without ever waiting; a connection whose queue
is full has fallen too far behind and is closed with ``4008 slow consumer`` rather than slowing
everyone else down or growing without bound.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import anyio

from .wire import CloseCode

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from .model import Principal

__all__ = ["Connection"]


class Connection:
    """A registered connection. Created by the gateway (or :mod:`notifykit.testing`).

    ``keys`` is the set of routing keys it is registered under; ``topics`` the topics it
    subscribed to. ``outbox`` yields the frames to send, in order.
    """

    __slots__ = (
        "_inbox",
        "_scope",
        "close_code",
        "close_reason",
        "id",
        "keys",
        "outbox",
        "principal",
        "topics",
    )

    def __init__(self, principal: Principal, *, queue_size: int = 256) -> None:
        self.id = secrets.token_urlsafe(12)
        self.principal = principal
        self.keys: set[str] = set()
        self.topics: set[str] = set()
        self._inbox: MemoryObjectSendStream[str]
        self.outbox: MemoryObjectReceiveStream[str]
        self._inbox, self.outbox = anyio.create_memory_object_stream[str](queue_size)
        self._scope: anyio.CancelScope | None = None
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def user_id(self) -> str | None:
        """The connection's user, or None if anonymous."""
        return self.principal.user_id

    def offer(self, frame: str) -> None:
        """Queue ``frame`` for sending, never waiting. A full queue closes the connection."""
        try:
            self._inbox.send_nowait(frame)
        except anyio.WouldBlock:
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: too many frames queued")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the connection is being torn down; nothing more goes out

    def bind(self, scope: anyio.CancelScope) -> None:
        """Attach the cancel scope :meth:`close` cancels (the gateway's per-connection scope)."""
        self._scope = scope
        if self.close_code is not None:
            scope.cancel()

    def close(self, code: int, reason: str) -> None:
        """Ask for this connection to be closed with ``code``; the first request wins."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        if self._scope is not None:
            self._scope.cancel()

    def release(self) -> None:
        """Close both ends of the outbound queue (after the connection is unregistered)."""
        self._inbox.close()
        self.outbox.close()

    @property
    def queued(self) -> int:
        """Frames waiting to be sent."""
        return self.outbox.statistics().current_buffer_used

    def __repr__(self) -> str:
        return f"<Connection {self.id} user={self.principal.user_id!r}>"
