"""What the two Redis propagators share: settings, channel names, lifecycle, subscribing,
history, and publishing to one server honestly.

:class:`RedisPropagatorBase` implements :class:`~notifykit.protocols.Propagator` but for
``publish`` and the choice of server: a subclass says where a channel lives (``_locate``),
starts what it needs (``_begin``), and publishes through :meth:`~RedisPropagatorBase._publish_at`.
With history (``history.size > 0``) a publish runs the append script per key (see
:mod:`~._history`), ``read`` runs the read script, ``barrier`` pings the subscriber connections,
and a :class:`~._sequencer.Sequencer` between the subscribers and ``deliver`` keeps each key's
messages exactly once and in offset order.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..errors import PropagationError
from ._channels import ChannelNames
from ._connection import Endpoint
from ._errors import describe
from ._history import HistoryCommands, parse_read
from ._positions import FreshReads
from ._publisher import Publisher
from ._sequencer import Sequencer, new_epoch
from ._subscribers import Subscribers

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from ..model import StreamHistory
    from ..protocols import Deliver
    from ._connection import Settings
    from ._history import HistorySettings

__all__ = ["RedisPropagatorBase"]


class RedisPropagatorBase:
    """A propagator over Redis pub/sub (``cluster``: sharded pub/sub on a Redis Cluster).

    ``url`` names the server (on a cluster, any node); ``prefix`` is the channel prefix.
    """

    def __init__(
        self,
        url: str,
        prefix: str,
        settings: Settings,
        history: HistorySettings,
        *,
        cluster: bool,
    ) -> None:
        self._endpoint = Endpoint.from_url(url)
        self._settings = settings
        self._names = ChannelNames(prefix, cluster=cluster)
        self._history = (
            HistoryCommands(self._names, history, sharded=cluster) if history.enabled else None
        )
        self._sequencer: Sequencer | None = None
        self._fresh = FreshReads(self._read_now)
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
        if self._history is not None:
            self._sequencer = sequencer = Sequencer(  # it batches its own reads: no sharing
                deliver,
                self._read_now,
                self._ping,
                self._settings,
                limit=self._history.settings.size,
            )
            sequencer.start()
            self._subscribers.on_confirmed = sequencer.confirmed
            deliver = sequencer.on_message
        self._subscribers.start(deliver)
        await self._begin()

    async def aclose(self) -> None:
        """Close every connection; pending ``subscribe()`` calls raise
        :class:`~notifykit.errors.PropagationError`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._end()
        await self._fresh.aclose()
        if self._sequencer is not None:
            await self._sequencer.aclose()
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
        sequencer = self._sequencer
        if sequencer is None:
            await self._subscribers.subscribe(keys)
            return
        sequencer.track(keys)
        try:
            await self._subscribers.subscribe(keys)
        except PropagationError:  # refused keys are not wanted any more: forget them
            routes, names = self._subscribers.routes, self._names
            sequencer.forget([key for key in keys if names.channel(key) not in routes])
            raise

    async def unsubscribe(self, keys: Collection[str]) -> None:
        """Stop delivering ``keys`` at once; the unsubscribe command follows in the background.
        A no-op when the propagator is not running."""
        if self._deliver is None or self._closed:
            return
        self._subscribers.unsubscribe(keys)
        if self._sequencer is not None:
            self._sequencer.forget(keys)
        await asyncio.sleep(0)

    # --- history ------------------------------------------------------------------------------

    async def barrier(self, keys: Collection[str]) -> None:
        """Return once every payload published to ``keys`` before the call has been passed to
        ``deliver``: a ``PING`` answered on the subscriber connection of each (concurrent calls
        share one), then any catch-up of theirs finished. A no-op without history. Raises
        :class:`~notifykit.errors.PropagationError` after ``command_timeout``."""
        sequencer = self._sequencer
        if sequencer is None:
            return
        self._check_running()
        timeout = self._settings.command_timeout
        try:
            async with asyncio.timeout(timeout):
                await self._subscribers.ping(keys)
                await sequencer.settled(keys)
        except TimeoutError:
            raise PropagationError(
                f"Redis did not answer the barrier within {timeout:g} s"
            ) from None

    async def _ping(self, keys: Collection[str]) -> None:
        """The subscriber connections' ``PING`` alone (for the sequencer), bounded."""
        try:
            async with asyncio.timeout(self._settings.command_timeout):
                await self._subscribers.ping(keys)
        except TimeoutError:
            raise PropagationError("Redis did not answer a PING in time") from None

    async def read(self, after: Mapping[str, int | None], limit: int) -> dict[str, StreamHistory]:
        """The history of each key's stream (see the protocol): one ``EVALSHA`` of the read
        script per key, pipelined per server (one round trip for a connection's three keys on
        one Redis). Reads with no offset at all (a fresh connect's positions) are shared by every
        caller of one event-loop pass (see :mod:`~._positions`). ``{}`` without history. Raises
        :class:`~notifykit.errors.PropagationError` if Redis cannot answer."""
        if self._history is not None and after and all(o is None for o in after.values()):
            self._check_running()  # fail now, not once the batch is read
            return await self._fresh.get(after.keys())
        return await self._read_now(after, limit)

    async def _read_now(
        self, after: Mapping[str, int | None], limit: int
    ) -> dict[str, StreamHistory]:
        """:meth:`read`, at once: one command per key."""
        history = self._history
        if history is None or not after:
            return {}
        self._check_running()
        epoch = new_epoch()
        groups: dict[str, tuple[Endpoint, list[str], list[bytes], list[bytes]]] = {}
        for key, offset in after.items():
            stream = self._names.stream(key)
            endpoint = self._locate(stream)
            if endpoint is None:
                self._stale()
                raise PropagationError("no reachable cluster node serves the stream's slot")
            group = groups.get(endpoint.address)
            if group is None:
                group = groups[endpoint.address] = (endpoint, [], [], [])
            group[1].append(key)
            group[2].extend(history.read(key, offset, limit, epoch))
            group[3].append(stream)
        if len(groups) == 1:  # no task for the usual case: one server
            return await self._read_at(*next(iter(groups.values())), after)
        results = await asyncio.gather(
            *(self._read_at(*group, after) for group in groups.values()),
            return_exceptions=True,
        )
        found: dict[str, StreamHistory] = {}
        for result in results:
            if isinstance(result, BaseException):
                raise result
            found.update(result)
        return found

    async def _read_at(
        self,
        endpoint: Endpoint,
        keys: list[str],
        parts: list[bytes],
        labels: list[bytes],
        after: Mapping[str, int | None],
    ) -> dict[str, StreamHistory]:
        replies = await self._publisher(endpoint).execute(parts, labels)
        found: dict[str, StreamHistory] = {}
        for key, reply in zip(keys, replies, strict=True):
            if isinstance(reply, BaseException):
                self._stale()  # a slot may have moved
                raise PropagationError(
                    f"Redis at {endpoint.address} refused to read the history of {key!r}: "
                    f"{describe(reply)}"
                )
            found[key] = parse_read(reply, after[key])
        return found

    # --- publishing -----------------------------------------------------------------------

    def _publisher(self, endpoint: Endpoint) -> Publisher:
        """The publisher connection to ``endpoint``, made (and started) on first use."""
        publisher = self._publishers.get(endpoint.address)
        if publisher is None:
            publisher = Publisher(
                endpoint,
                self._settings,
                sharded=self._sharded,
                scripts=self._history.scripts if self._history is not None else (),
            )
            publisher.start()
            self._publishers[endpoint.address] = publisher
        return publisher

    async def _publish_at(
        self, endpoint: Endpoint, keys: Sequence[str], payload: bytes, epoch: bytes
    ) -> None:
        """Publish ``payload`` to ``keys``, all served by ``endpoint``, honestly (see
        :meth:`_ready`): with history, append it to their streams too (``epoch`` is the
        candidate for a stream that has none). Raises :class:`~._errors.PublishFailed`
        naming the channels Redis refused."""
        publisher = self._publisher(endpoint)
        if not self._subscribers.is_ready(endpoint.address):
            await self._ready(publisher)
        await self._send(publisher, keys, payload, epoch)

    async def _send(
        self, publisher: Publisher, keys: Sequence[str], payload: bytes, epoch: bytes
    ) -> None:
        history = self._history
        channels = self._names.channels(keys)
        if history is None:
            await publisher.publish(channels, payload)
        else:
            await publisher.run(history.append(keys, payload, epoch), channels)

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
        ``scripts_reloaded`` (after a ``NOSCRIPT``), and ``connected`` (1 while healthy);
        with history, those of the sequencer too (``history_duplicates``,
        ``history_repaired``, ``history_gaps_lost``, ``history_catch_ups``...)."""
        stats = dict.fromkeys(Publisher.COUNTERS, 0)
        stats.update(self._retired)
        for publisher in self._publishers.values():
            for name, value in publisher.counters().items():
                stats[name] += value
        stats.update(self._subscribers.counters())
        if self._sequencer is not None:
            stats.update(self._sequencer.counters())
        stats["connected"] = int(self.healthy)
        return stats
