"""In-memory implementations: the default for one process, and what apps unit-test against.

:class:`MemoryPropagator` instances that share a :class:`MemoryBus` behave like instances that
share a Redis: each receives only the keys it subscribed to. With no bus given, a propagator has
a bus of its own (one instance, the common case).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio.lowlevel

from .errors import PropagationError
from .model import BROADCAST_KEY

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from .connection import Connection
    from .protocols import Deliver

__all__ = ["MemoryBus", "MemoryPropagator", "MemorySocketState"]

logger = logging.getLogger("notifykit.memory")


class MemorySocketState:
    """:class:`~notifykit.protocols.SocketState` as a dict of sets: O(1) add and remove, and a
    key is deleted with its last connection."""

    __slots__ = ("_by_key", "_users")

    def __init__(self) -> None:
        self._by_key: dict[str, set[Connection]] = {}
        self._users = 0

    def add(self, key: str, connection: Connection) -> bool:
        """Put ``connection`` under ``key``; True if ``key`` was empty."""
        members = self._by_key.get(key)
        if members is None:
            self._by_key[key] = {connection}
            if key.startswith("u:"):
                self._users += 1
            return True
        members.add(connection)
        return False

    def remove(self, key: str, connection: Connection) -> bool:
        """Take ``connection`` from under ``key``; True if ``key`` is now empty."""
        members = self._by_key.get(key)
        if members is None or connection not in members:
            return False
        members.discard(connection)
        if members:
            return False
        del self._by_key[key]
        if key.startswith("u:"):
            self._users -= 1
        return True

    def members(self, key: str) -> Collection[Connection]:
        """The connections under ``key``."""
        return self._by_key.get(key, ())

    def keys(self) -> Collection[str]:
        """Every occupied key."""
        return self._by_key.keys()

    @property
    def connection_count(self) -> int:
        """Distinct connections (every connection is under the broadcast key)."""
        return len(self._by_key.get(BROADCAST_KEY, ()))

    @property
    def user_count(self) -> int:
        """Distinct users with at least one connection."""
        return self._users


class MemoryBus:
    """What in-process propagators share, like instances share a Redis server."""

    __slots__ = ("subscribers",)

    def __init__(self) -> None:
        self.subscribers: dict[str, set[MemoryPropagator]] = {}


class MemoryPropagator:
    """:class:`~notifykit.protocols.Propagator` within one process.

    Delivery is synchronous and in publish order: when ``publish`` returns, every subscribed
    propagator's ``deliver`` has been called.
    """

    def __init__(self, bus: MemoryBus | None = None) -> None:
        self._bus = bus if bus is not None else MemoryBus()
        self._deliver: Deliver | None = None
        self._keys: set[str] = set()
        self._published = 0
        self._received = 0

    async def start(self, deliver: Deliver) -> None:
        """Start delivering to ``deliver``."""
        if self._deliver is not None:
            raise RuntimeError("this propagator is already started")
        self._deliver = deliver

    async def aclose(self) -> None:
        """Drop every subscription. Idempotent."""
        await self.unsubscribe(list(self._keys))
        self._deliver = None

    async def subscribe(self, keys: Collection[str]) -> None:
        """Receive payloads published to ``keys`` from now on."""
        if self._deliver is None:
            raise PropagationError("the propagator is not started")
        for key in keys:
            if key not in self._keys:
                self._keys.add(key)
                self._bus.subscribers.setdefault(key, set()).add(self)
        await anyio.lowlevel.checkpoint()

    async def unsubscribe(self, keys: Collection[str]) -> None:
        """Stop receiving payloads for ``keys``."""
        subscribers = self._bus.subscribers
        for key in keys:
            if key in self._keys:
                self._keys.discard(key)
                peers = subscribers[key]
                peers.discard(self)
                if not peers:
                    del subscribers[key]
        await anyio.lowlevel.checkpoint()

    async def publish(self, keys: Sequence[str], payload: bytes) -> None:
        """Deliver ``payload`` to every propagator on the bus subscribed to any of ``keys``."""
        if self._deliver is None:
            raise PropagationError("the propagator is not started")
        self._published += 1
        subscribers = self._bus.subscribers
        for key in keys:
            for peer in tuple(subscribers.get(key, ())):
                peer._receive(key, payload)
        await anyio.lowlevel.checkpoint()

    def _receive(self, key: str, payload: bytes) -> None:
        deliver = self._deliver
        if deliver is None:
            return
        self._received += 1
        try:
            deliver(key, payload)
        except Exception:
            logger.exception("deliver failed for key %r; continuing", key)

    @property
    def healthy(self) -> bool:
        """Always True while started: there is no backend to lose."""
        return self._deliver is not None

    def statistics(self) -> Mapping[str, int]:
        """``published`` and ``received`` payloads, and ``subscriptions`` now held."""
        return {
            "published": self._published,
            "received": self._received,
            "subscriptions": len(self._keys),
        }
