"""A bench-only propagator with the single-channel design, as the scaling baseline.

Every instance subscribes to one shared channel, receives every message and filters by the
routing key it carries — what the NestJS original and python-socketio's Redis manager do. It
wraps the real Redis propagator (same connections, reader and pipelining), so the only
difference measured is the routing design: the per-user/per-topic subscriptions the hub asks
for stay local, and every publish goes to the one channel with its key in front.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from notifykit.model import StreamHistory
from notifykit.protocols import Deliver, Propagator

SHARED_KEY = "t:bench-single-channel"
"""The one routing key (a topic key, valid for any propagator) every instance listens on."""


class SingleChannelPropagator:
    """:class:`~notifykit.protocols.Propagator` that sends everything through one channel of
    ``inner`` and filters on arrival. Payload on the channel: 2-byte key length, key, payload."""

    def __init__(self, inner: Propagator) -> None:
        self._inner = inner
        self._keys: set[str] = set()
        self._deliver: Deliver | None = None
        self.received = 0
        self.filtered_out = 0

    async def start(self, deliver: Deliver) -> None:
        """Start the inner propagator and subscribe to the shared channel."""
        self._deliver = deliver
        await self._inner.start(self._receive)
        await self._inner.subscribe([SHARED_KEY])

    async def aclose(self) -> None:
        """Close the inner propagator."""
        await self._inner.aclose()
        self._keys.clear()

    async def subscribe(self, keys: Collection[str]) -> None:
        """Only remember ``keys``: the shared channel already carries them."""
        self._keys.update(keys)

    async def unsubscribe(self, keys: Collection[str]) -> None:
        """Forget ``keys``."""
        self._keys.difference_update(keys)

    async def publish(self, keys: Sequence[str], payload: bytes) -> None:
        """Publish ``payload`` once per key, each tagged with its key, to the shared channel."""
        for key in keys:
            tag = key.encode()
            await self._inner.publish([SHARED_KEY], len(tag).to_bytes(2, "big") + tag + payload)

    async def barrier(self, keys: Collection[str]) -> None:
        """Everything published before this call went through the shared channel."""
        await self._inner.barrier([SHARED_KEY])

    async def read(self, after: Mapping[str, int | None], limit: int) -> dict[str, StreamHistory]:
        """The inner propagator's history (none on Redis today)."""
        return await self._inner.read(after, limit)

    def _receive(self, _channel_key: str, framed: bytes) -> None:
        self.received += 1
        size = int.from_bytes(framed[:2], "big")
        key = framed[2 : 2 + size].decode()
        if key in self._keys and self._deliver is not None:
            self._deliver(key, framed[2 + size :])
        else:
            self.filtered_out += 1

    @property
    def healthy(self) -> bool:
        """The inner propagator's health."""
        return self._inner.healthy

    def statistics(self) -> Mapping[str, int]:
        """The inner statistics plus ``received`` and ``filtered_out`` here."""
        stats = dict(self._inner.statistics())
        stats["single_received"] = self.received
        stats["single_filtered_out"] = self.filtered_out
        return stats
