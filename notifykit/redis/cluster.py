"""The Redis Cluster propagator: per-key channels spread over the shards (sharded pub/sub).

``SPUBLISH``/``SSUBSCRIBE`` (Redis 7+) route a channel like a key: to the master serving its
hash slot, which forwards it only to its own replicas and subscribers. So each shard carries only
its share of the channels, and adding shards adds pub/sub capacity (classic ``PUBLISH`` in a
cluster is broadcast to every node). Each instance keeps one subscriber connection per master
that serves a channel it wants, and one pipelined publisher connection per master.

When slots move (resharding, failover) the old master drops the subscriptions with a
``sunsubscribe`` push, or answers ``MOVED``: the propagator refreshes its slot map
(``CLUSTER SLOTS``) and subscribes again at the new owner. A lost node connection triggers a
refresh as well, and the map is refreshed every ``topology_refresh_interval`` seconds anyway.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from ..errors import ConfigurationError, PropagationError
from ._connection import Endpoint, Settings, backoff
from ._errors import EXPECTED_ERRORS, PublishFailed, describe, is_redirect
from ._publisher import Publisher
from ._subscriber import Subscriber
from ._topology import Topology
from ._waiters import Waiter, Waiters
from .propagator import channel_prefix

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from redis.exceptions import ResponseError

    from ..model import StreamHistory
    from ..protocols import Deliver

__all__ = ["RedisClusterPropagator"]

logger = logging.getLogger("notifykit.redis")

_COUNTERS = (*Subscriber.COUNTERS, *Publisher.COUNTERS)


class RedisClusterPropagator:
    """:class:`~notifykit.protocols.Propagator` over a Redis Cluster's sharded pub/sub
    (Redis 7+, asyncio only).

    ``url`` names any node (``redis://:secret@10.0.0.5:7000``); the others are discovered.
    ``prefix`` must not contain ``{`` or ``}`` (a hash tag would put every channel in one slot).
    The tunables are those of :class:`~notifykit.redis.RedisPropagator`, plus
    ``topology_refresh_interval``: how often the slot map is re-read even if nothing went wrong.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:7000/0",
        *,
        prefix: str = "notifykit",
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        health_check_interval: float = 5.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 10.0,
        max_pending_publishes: int = 10_000,
        client_name: str = "notifykit",
        topology_refresh_interval: float = 30.0,
    ) -> None:
        if isinstance(prefix, str) and ("{" in prefix or "}" in prefix):
            raise ConfigurationError("a cluster channel prefix must not contain { or }")
        if not isinstance(topology_refresh_interval, int | float) or topology_refresh_interval <= 0:
            raise ConfigurationError("topology_refresh_interval must be a positive number")
        self._prefix = channel_prefix(prefix)
        self._settings = Settings(
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            health_check_interval=health_check_interval,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            max_pending_publishes=max_pending_publishes,
            client_name=client_name,
        )
        self._topology = Topology(Endpoint.from_url(url), self._settings)
        self._refresh_interval = float(topology_refresh_interval)
        self._routes: dict[bytes, str] = {}
        self._waiters = Waiters()
        self._wanted: set[bytes] = set()
        self._homeless: set[bytes] = set()  # wanted, but no known master serves their slot
        self._owner_of: dict[bytes, Subscriber] = {}
        self._subscribers: dict[str, Subscriber] = {}
        self._publishers: dict[str, Publisher] = {}
        self._retired: dict[str, int] = {}
        self._rng = random.Random()
        self._deliver: Deliver | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._refresh_needed = asyncio.Event()
        self._refresh_lock = asyncio.Lock()
        self._reachable = False
        self._closed = False
        self.topology_refreshes = 0
        self.topology_refresh_failures = 0
        self.moved_channels = 0
        self.rejected_subscriptions = 0

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, deliver: Deliver) -> None:
        """Read the slot map (waiting at most ``connect_timeout``) and start.

        Returns even if no node is reachable; ``healthy`` then says so.
        """
        if self._deliver is not None or self._closed:
            raise RuntimeError("this propagator was already started")
        self._deliver = deliver
        try:
            async with asyncio.timeout(self._settings.connect_timeout + 1.0):
                await self._refresh()
        except Exception as exc:
            logger.warning("cannot read the cluster's slot map: %s; retrying", describe(exc))
            self._refresh_needed.set()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="notifykit-redis-slots")

    async def aclose(self) -> None:
        """Close every connection; pending ``subscribe()`` calls raise. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._waiters.fail_all(lambda: PropagationError("the propagator is closed"))
        task, self._refresher = self._refresher, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        for subscriber in self._subscribers.values():
            await subscriber.aclose()
        for publisher in self._publishers.values():
            await publisher.aclose()
        self._routes.clear()

    # --- the Propagator protocol ----------------------------------------------------------

    async def subscribe(self, keys: Collection[str]) -> None:
        """``SSUBSCRIBE`` to the channels of ``keys`` at their shards; return once every one is
        confirmed (waiting through outages and slot moves)."""
        if self._deliver is None or self._closed:
            raise PropagationError("the propagator is not running")
        prefix, routes = self._prefix, self._routes
        waiter: Waiter | None = None
        for key in keys:
            channel = prefix + key.encode("utf-8", "surrogatepass")
            routes[channel] = key
            self._wanted.add(channel)
            owner = self._owner_of.get(channel)
            if not (owner.want(channel) if owner is not None else self._assign(channel)):
                if waiter is None:
                    waiter = Waiter()
                self._waiters.add(channel, waiter)
        if waiter is not None:
            await waiter.wait()

    async def unsubscribe(self, keys: Collection[str]) -> None:
        """Stop delivering ``keys`` at once; the ``SUNSUBSCRIBE`` follows in the background."""
        if self._deliver is None or self._closed:
            return
        prefix = self._prefix
        for key in keys:
            channel = prefix + key.encode("utf-8", "surrogatepass")
            self._routes.pop(channel, None)
            self._wanted.discard(channel)
            self._homeless.discard(channel)
            owner = self._owner_of.pop(channel, None)
            if owner is not None:
                owner.unwant(channel)
            self._waiters.release(channel)
        await asyncio.sleep(0)

    async def barrier(self, keys: Collection[str]) -> None:
        """No history yet on Redis: nothing to wait for."""

    async def read(self, after: Mapping[str, int | None], limit: int) -> dict[str, StreamHistory]:
        """No history yet on Redis: ``{}`` (clients are told positions only when a history is
        kept; a resume is answered ``recovered: false``)."""
        return {}

    async def publish(self, keys: Sequence[str], payload: bytes) -> None:
        """``SPUBLISH`` to each key's channel, pipelined per master; after a ``MOVED`` the slot
        map is refreshed and the redirected channels are published once more."""
        if self._deliver is None or self._closed:
            raise PropagationError("the propagator is not running")
        prefix = self._prefix
        channels = [prefix + key.encode("utf-8", "surrogatepass") for key in keys]
        seen = self.topology_refreshes
        try:
            await self._publish(channels, payload)
        except PublishFailed as exc:
            if not all(is_redirect(error) for _, error in exc.errors):
                raise
            await self._refresh_after(seen)
            await self._publish([channel for channel, _ in exc.errors], payload)
        except PropagationError:
            self._refresh_needed.set()  # a master may have failed over
            raise

    @property
    def healthy(self) -> bool:
        """True while the slot map is known and every subscriber connection is up."""
        return (
            self._reachable
            and not self._closed
            and self._deliver is not None
            and all(subscriber.healthy for subscriber in self._subscribers.values())
        )

    def statistics(self) -> Mapping[str, int]:
        """The counters of :meth:`RedisPropagator.statistics`, summed over the shards, plus
        ``topology_refreshes``, ``topology_refresh_failures``, ``moved_channels`` (channels
        re-homed after a slot moved), ``masters`` and ``subscriber_connections``."""
        stats = dict.fromkeys(_COUNTERS, 0)
        stats.update(self._retired)
        parts = [s.counters() for s in self._subscribers.values()]
        parts += [p.counters() for p in self._publishers.values()]
        for counters in parts:
            for name, value in counters.items():
                stats[name] = stats.get(name, 0) + value
        stats.update(
            subscriptions=len(self._wanted),
            rejected_subscriptions=self.rejected_subscriptions,
            topology_refreshes=self.topology_refreshes,
            topology_refresh_failures=self.topology_refresh_failures,
            moved_channels=self.moved_channels,
            masters=len(self._topology.masters),
            subscriber_connections=len(self._subscribers),
            connected=int(self.healthy),
        )
        return stats

    # --- routing --------------------------------------------------------------------------

    def _assign(self, channel: bytes) -> bool:
        """Hand ``channel`` to the subscriber of its master; True if already confirmed there."""
        address = self._topology.address_for(channel)
        if address is None:
            self._homeless.add(channel)
            self._refresh_needed.set()
            return False
        subscriber = self._subscribers.get(address)
        if subscriber is None:
            subscriber = Subscriber(
                self._topology.masters[address],
                self._settings,
                self,
                self._routes,
                self._prefix,
                sharded=True,
                rng=self._rng,
            )
            if self._deliver is not None:
                subscriber.start(self._deliver)
            self._subscribers[address] = subscriber
        self._owner_of[channel] = subscriber
        return subscriber.want(channel)

    async def _publish(self, channels: list[bytes], payload: bytes) -> None:
        by_master: dict[str, list[bytes]] = {}
        for channel in channels:
            address = self._topology.address_for(channel)
            if address is None:
                self._refresh_needed.set()
                raise PropagationError("no reachable cluster node serves the channel's slot")
            by_master.setdefault(address, []).append(channel)
        if len(by_master) == 1:
            ((address, group),) = by_master.items()
            await self._publisher(address).publish(group, payload)
            return
        results = await asyncio.gather(
            *(self._publisher(a).publish(g, payload) for a, g in by_master.items()),
            return_exceptions=True,
        )
        errors = [result for result in results if isinstance(result, BaseException)]
        refused = [error for error in errors if isinstance(error, PublishFailed)]
        if refused and len(refused) == len(errors):
            pairs = [pair for failed in refused for pair in failed.errors]
            raise PublishFailed(", ".join(by_master), pairs)
        if errors:
            raise errors[0]

    def _publisher(self, address: str) -> Publisher:
        publisher = self._publishers.get(address)
        if publisher is None:
            publisher = Publisher(self._topology.masters[address], self._settings, sharded=True)
            publisher.start()
            self._publishers[address] = publisher
        return publisher

    # --- the slot map ---------------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        attempt = 0
        while True:
            try:
                async with asyncio.timeout(self._refresh_interval):
                    await self._refresh_needed.wait()
            except TimeoutError:
                pass
            self._refresh_needed.clear()
            try:
                async with self._refresh_lock:
                    await self._refresh()
            except Exception as exc:
                expected = isinstance(exc, EXPECTED_ERRORS)
                log = logger.warning if attempt == 0 or not expected else logger.debug
                log(
                    "cannot refresh the cluster's slot map: %s",
                    describe(exc),
                    exc_info=not expected,
                )
                self._refresh_needed.set()
                await asyncio.sleep(backoff(attempt, self._settings, self._rng))
                attempt += 1
            else:
                attempt = 0
                await asyncio.sleep(self._settings.backoff_initial)  # at most so many per second

    async def _refresh_after(self, seen: int) -> None:
        """Refresh the map unless someone did since ``seen`` (bounded by ``command_timeout``)."""
        try:
            async with asyncio.timeout(self._settings.connect_timeout), self._refresh_lock:
                if self.topology_refreshes == seen:
                    await self._refresh()
        except Exception as exc:
            raise PropagationError(f"cannot refresh the slot map: {describe(exc)}") from exc

    async def _refresh(self) -> None:
        try:
            changed = await self._topology.refresh()
        except Exception:
            self._reachable = False
            self.topology_refresh_failures += 1
            raise
        self._reachable = True
        self.topology_refreshes += 1
        if changed:
            logger.info("cluster slot map updated: %d master(s)", len(self._topology.masters))
        if changed or self._homeless:
            await self._reroute()

    async def _reroute(self) -> None:
        """Move every wanted channel to the subscriber of the master now serving it, and close
        the connections to nodes that are no longer masters."""
        self._homeless.clear()
        for channel in list(self._wanted):
            owner = self._owner_of.get(channel)
            address = self._topology.address_for(channel)
            if owner is not None and owner.endpoint.address == address:
                continue
            if owner is not None:
                owner.unwant(channel)
                del self._owner_of[channel]
            if self._assign(channel):
                self._waiters.release(channel)
        masters = self._topology.masters
        for address in [a for a in self._subscribers if a not in masters]:
            subscriber = self._subscribers.pop(address)
            self._retire(subscriber.counters())
            await subscriber.aclose()
        for address in [a for a in self._publishers if a not in masters]:
            publisher = self._publishers.pop(address)
            self._retire(publisher.counters())
            await publisher.aclose()

    def _retire(self, counters: dict[str, int]) -> None:
        for name, value in counters.items():
            self._retired[name] = self._retired.get(name, 0) + value

    # --- what the subscribers report ------------------------------------------------------

    def on_confirmed(self, channel: bytes) -> None:
        """Release the callers waiting for ``channel``."""
        self._waiters.release(channel)

    def on_rejected(
        self, subscriber: Subscriber, channels: list[bytes], error: ResponseError
    ) -> None:
        """Fail the callers waiting for ``channels`` and stop wanting them."""
        self.rejected_subscriptions += len(channels)
        address = subscriber.endpoint.address
        logger.error("Redis at %s refused %d subscription(s): %s", address, len(channels), error)
        message = f"Redis at {address} refused the subscription: {error}"
        for channel in channels:
            subscriber.unwant(channel)
            self._wanted.discard(channel)
            if self._owner_of.get(channel) is subscriber:
                del self._owner_of[channel]
            self._waiters.fail(channel, lambda: PropagationError(message))

    def on_lost(self, subscriber: Subscriber, channels: list[bytes]) -> None:
        """The slots of ``channels`` moved: re-home them after a slot map refresh."""
        logger.warning(
            "Redis at %s no longer serves %d subscribed channel(s); refreshing the slot map",
            subscriber.endpoint.address,
            len(channels),
        )
        self.moved_channels += len(channels)
        for channel in channels:
            if self._owner_of.get(channel) is subscriber:
                del self._owner_of[channel]
                subscriber.unwant(channel)
            if channel in self._wanted:
                self._homeless.add(channel)
        self._refresh_needed.set()

    def on_connection_change(self, subscriber: Subscriber, connected: bool) -> None:
        """A lost node connection may mean a failover: re-read the slot map."""
        if not connected:
            self._refresh_needed.set()
