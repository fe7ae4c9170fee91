"""What the two Redis propagators share: settings, channel names, lifecycle, subscribing, and
publishing to one server honestly.

:class:`RedisPropagatorBase` implements :class:`~notifykit.protocols.Propagator` but for
``publish`` and the choice of server: a subclass says where a channel lives (``_locate``),
starts what it needs (``_begin``), and publishes through :meth:`~RedisPropagatorBase._publish_at`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..errors import PropagationError
from ._channels import ChannelNames
from ._connection import Endpoint
from ._publisher import Publisher
from ._subscribers import Subscribers

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from ..model import StreamHistory
    from ..protocols import Deliver
    from ._connection import Settings

__all__ = ["RedisPropagatorBase"]


class RedisPropagatorBase:
    """A propagator over Redis pub/sub (``cluster``: sharded pub/sub on a Redis Cluster).

    ``url`` names the server (on a cluster, any node); ``prefix`` is the channel prefix.
    """

    def __init__(self, url: str, prefix: str, settings: Settings, *, cluster: bool) -> None:
        self._endpoint = Endpoint.from_url(url)
        self._settings = settings
        self._names = ChannelNames(prefix, cluster=cluster)
        self._subscribers = Subscribers(
            settings,
            self._names,
            locate=self._locate,
            sharded=cluster,
            stale=self._stale if cluster else None,
        )
        self._publishers: dict[str, Publisher] = {}
        self._retired: dict[str, int] = {}
        self._sharded = cluster
        self._deliver: Deliver | None = None
        self._closed = False

    @property
    def address(self) -> str:
        """``host:port`` of the server the URL names (no credentials)."""
        return self._endpoint.address

    # --- what a subclass provides ---------------------------------------------------------

    def _locate(self, channel: bytes) -> Endpoint | None:
        """The server holding ``channel``, None if unknown for now."""
        raise NotImplementedError

    def _stale(self) -> None:
        """A cluster's slot map may be out of date (called by the subscribers)."""

    async def _begin(self) -> None:
        """Connect, after ``deliver`` is set; return even if Redis is unreachable."""

    async def _end(self) -> None:
        """Stop the subclass's own tasks (before the connections close)."""

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, deliver: Deliver) -> None:
        """Start: received payloads go to ``deliver``. Waits at most about
        ``connect_timeout`` for Redis, and returns even if it is unreachable (``healthy`` then
        says so; the propagator keeps reconnecting). Raises ``RuntimeError`` if started before.
        """
        if self._deliver is not None or self._closed:
            raise RuntimeError("this propagator was already started")
        self._deliver = deliver
        self._subscribers.start(deliver)
        await self._begin()

    async def aclose(self) -> None:
        """Close every connection; pending ``subscribe()`` calls raise
        :class:`~notifykit.errors.PropagationError`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._end()
        await self._subscribers.aclose()
        for publisher in self._publishers.values():
            await publisher.aclose()

    def _check_running(self) -> None:
        if self._deliver is None or self._closed:
            raise PropagationError("the propagator is not running")

    # --- subscribing ----------------------------------------------------------------------

    async def subscribe(self, keys: Collection[str]) -> None:
        """Subscribe to the channels of ``keys``; return once Redis confirmed every one.

        Idempotent; concurrent calls for the same key share one subscription. While Redis is
        unreachable this waits for the reconnection (bound it with a timeout, as the hub does).
        Raises :class:`~notifykit.errors.PropagationError` if Redis refuses the subscription
        (an ACL, say), the propagator is not running, or it is closed meanwhile.
        """
        self._check_running()
        await self._subscribers.subscribe(keys)

    async def unsubscribe(self, keys: Collection[str]) -> None:
        """Stop delivering ``keys`` at once; the unsubscribe command follows in the background.
        A no-op when the propagator is not running."""
        if self._deliver is None or self._closed:
            return
        self._subscribers.unsubscribe(keys)
        await asyncio.sleep(0)

    # --- history (none yet on Redis) -------------------------------------------------------

    async def barrier(self, keys: Collection[str]) -> None:
        """No history yet on Redis: nothing to wait for."""

    async def read(self, after: Mapping[str, int | None], limit: int) -> dict[str, StreamHistory]:
        """No history yet on Redis: ``{}`` (clients are told positions only when a history is
        kept; a resume is answered ``recovered: false``)."""
        return {}

    # --- publishing -----------------------------------------------------------------------

    def _publisher(self, endpoint: Endpoint) -> Publisher:
        """The publisher connection to ``endpoint``, made (and started) on first use."""
        publisher = self._publishers.get(endpoint.address)
        if publisher is None:
            publisher = Publisher(endpoint, self._settings, sharded=self._sharded)
            publisher.start()
            self._publishers[endpoint.address] = publisher
        return publisher

    async def _publish_at(self, endpoint: Endpoint, channels: list[bytes], payload: bytes) -> None:
        """Publish ``payload`` to ``channels``, all served by ``endpoint``, honestly (see
        :meth:`_ready`)."""
        publisher = self._publisher(endpoint)
        if not self._subscribers.is_ready(endpoint.address):
            await self._ready(publisher)
        await publisher.publish(channels, payload)

    async def _ready(self, publisher: Publisher) -> None:
        """Return once a payload published through ``publisher`` would reach this instance.

        While the subscriber connection to that server has not got its subscriptions back
        (Redis just restarted, say), wait for it up to ``command_timeout``, then raise
        :class:`~notifykit.errors.PropagationError` rather than publish what this instance's
        own clients would miss. While Redis is unreachable, raise at once (the publisher's
        connection attempt fails).
        """
        await publisher.check()
        await self._subscribers.ready(publisher.endpoint.address)

    async def _retire(self, keep: Collection[str]) -> None:
        """Close the connections to servers whose address is not in ``keep``."""
        await self._subscribers.retire(keep)
        for address in [a for a in self._publishers if a not in keep]:
            publisher = self._publishers.pop(address)
            for name, value in publisher.counters().items():
                self._retired[name] = self._retired.get(name, 0) + value
            await publisher.aclose()

    # --- health ---------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """True while running with every subscriber connection up and its subscriptions
        restored (``/readyz`` says 503 otherwise)."""
        return self._deliver is not None and not self._closed and self._subscribers.healthy

    def statistics(self) -> Mapping[str, int]:
        """Counters: ``published`` (commands), ``publish_batches`` (pipelines),
        ``publish_errors``, ``publisher_connects``, ``received``, ``subscriptions`` (channels
        wanted now), ``subscribe_batches`` (writes of subscribe and unsubscribe commands),
        ``rejected_subscriptions``, ``reconnects``, ``resubscribed_channels``,
        ``connect_failures``, ``watchdog_repairs``, ``lost_subscriptions``, ``malformed``,
        ``deliver_errors``, ``dropped_unsubscribed`` (late messages for channels just left),
        and ``connected`` (1 while healthy)."""
        stats = dict.fromkeys(Publisher.COUNTERS, 0)
        stats.update(self._retired)
        for publisher in self._publishers.values():
            for name, value in publisher.counters().items():
                stats[name] += value
        stats.update(self._subscribers.counters())
        stats["connected"] = int(self.healthy)
        return stats
