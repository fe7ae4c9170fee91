"""In-memory :class:`~notifykit.protocols.Propagator`: propagation within one process.

Propagators that share a :class:`MemoryBus` behave like instances that share a Redis: each
receives only the keys it subscribed to, and they share one history.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio.lowlevel

from ..errors import NotRunning
from .history import DEFAULT_HISTORY_SIZE, DEFAULT_HISTORY_TTL, MemoryHistory

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from ..model import StreamHistory
    from ..protocols import Deliver

__all__ = ["MemoryBus", "MemoryPropagator"]

logger = logging.getLogger("notifykit.memory")


class MemoryBus:
    """What in-process propagators share, like instances share a Redis server: subscriptions
    and one :class:`~notifykit.memory.MemoryHistory` (``history_size`` entries per stream,
    ``history_ttl`` seconds; ``history_size=0`` keeps no history)."""

    __slots__ = ("history", "subscribers")

    def __init__(
        self, *, history_size: int = DEFAULT_HISTORY_SIZE, history_ttl: float = DEFAULT_HISTORY_TTL
    ) -> None:
        self.subscribers: dict[str, set[MemoryPropagator]] = {}
        self.history = (
            MemoryHistory(size=history_size, ttl=history_ttl) if history_size != 0 else None
        )


class MemoryPropagator:
    """:class:`~notifykit.protocols.Propagator` within one process.

    Delivery is synchronous and in publish order: when ``publish`` returns, every subscribed
    propagator's ``deliver`` has been called. With no ``bus``, it has one of its own with the
    given history settings (see :class:`MemoryBus`); a shared bus has its own settings.
    """

    def __init__(
        self,
        bus: MemoryBus | None = None,
        *,
        history_size: int = DEFAULT_HISTORY_SIZE,
        history_ttl: float = DEFAULT_HISTORY_TTL,
    ) -> None:
        if bus is None:
            bus = MemoryBus(history_size=history_size, history_ttl=history_ttl)
        self._bus = bus
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
            raise NotRunning("the propagator is not started")
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
            raise NotRunning("the propagator is not started")
        self._published += 1
        subscribers, history = self._bus.subscribers, self._bus.history
        for key in keys:
            stamped = payload if history is None else history.append(key, payload)
            for peer in tuple(subscribers.get(key, ())):
                peer._receive(key, stamped)
        await anyio.lowlevel.checkpoint()

    async def barrier(self, keys: Collection[str]) -> None:
        """Delivery is synchronous: everything published before has been delivered."""
        await anyio.lowlevel.checkpoint()

    async def read(self, after: Mapping[str, int | None], limit: int) -> dict[str, StreamHistory]:
        """The history of each key's stream (see the protocol); ``{}`` without history."""
        if self._deliver is None:
            raise NotRunning("the propagator is not started")
        history = self._bus.history
        await anyio.lowlevel.checkpoint()
        if history is None:
            return {}
        return {key: history.read(key, offset, limit) for key, offset in after.items()}

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
        """``published`` and ``received`` payloads, ``subscriptions`` now held, and the
        history's figures (``history_streams``, ``history_entries``...)."""
        stats = {
            "published": self._published,
            "received": self._received,
            "subscriptions": len(self._keys),
        }
        if self._bus.history is not None:
            for name, value in self._bus.history.statistics().items():
                stats["history_" + name] = value
        return stats
