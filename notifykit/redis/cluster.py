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
from ._base import RedisPropagatorBase
from ._connection import Settings, backoff
from ._errors import PublishFailed, describe, is_outage, is_redirect, map_redis_errors
from ._topology import Topology

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ._connection import Endpoint

__all__ = ["RedisClusterPropagator"]

logger = logging.getLogger("notifykit.redis")


class RedisClusterPropagator(RedisPropagatorBase):
    """:class:`~notifykit.protocols.Propagator` over a Redis Cluster's sharded pub/sub
    (Redis 7+, asyncio only).

    ``url`` names any node (``redis://:secret@10.0.0.5:7000``); the others are discovered.
    ``prefix`` must not contain ``{`` or ``}`` (a hash tag would put every channel in one slot).
    The tunables are those of :class:`~notifykit.redis.RedisPropagator`, plus
    ``topology_refresh_interval``: how often the slot map is re-read even if nothing went wrong.
    A publish waits for (or is refused because of) the subscriber connection to the master it
    goes to only, so the other shards keep working while one is down. Raises
    :class:`~notifykit.errors.ConfigurationError` for an unusable URL or setting.
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
        if not isinstance(topology_refresh_interval, int | float) or topology_refresh_interval <= 0:
            raise ConfigurationError("topology_refresh_interval must be a positive number")
        settings = Settings(
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            health_check_interval=health_check_interval,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            max_pending_publishes=max_pending_publishes,
            client_name=client_name,
        )
        super().__init__(url, prefix, settings, cluster=True)
        self._topology = Topology(self._endpoint, self._settings)
        self._refresh_interval = float(topology_refresh_interval)
        self._refresher: asyncio.Task[None] | None = None
        self._refresh_needed = asyncio.Event()
        self._refresh_lock = asyncio.Lock()
        self._reachable = False
        self._rng = random.Random()
        self.topology_refreshes = 0
        self.topology_refresh_failures = 0

    # --- lifecycle ------------------------------------------------------------------------

    async def _begin(self) -> None:
        try:
            async with asyncio.timeout(self._settings.connect_timeout + 1.0):
                await self._refresh()
        except Exception as exc:
            logger.warning("cannot read the cluster's slot map: %s; retrying", describe(exc))
            self._refresh_needed.set()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="notifykit-redis-slots")

    async def _end(self) -> None:
        task, self._refresher = self._refresher, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    # --- where channels live --------------------------------------------------------------

    def _locate(self, channel: bytes) -> Endpoint | None:
        address = self._topology.address_for(channel)
        return None if address is None else self._topology.masters[address]

    def _stale(self) -> None:
        self._refresh_needed.set()

    # --- publishing -----------------------------------------------------------------------

    async def publish(self, keys: Sequence[str], payload: bytes) -> None:
        """``SPUBLISH`` to each key's channel, pipelined per master; after a ``MOVED`` the slot
        map is refreshed and the redirected channels are published once more.

        Raises :class:`~notifykit.errors.PropagationError` if a master did not accept its
        share, or if this instance would not receive it itself (see
        :class:`~notifykit.redis.RedisPropagator.publish`).
        """
        self._check_running()
        channels = self._names.channels(keys)
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

    async def _publish(self, channels: list[bytes], payload: bytes) -> None:
        by_master: dict[str, list[bytes]] = {}
        for channel in channels:
            address = self._topology.address_for(channel)
            if address is None:
                self._refresh_needed.set()
                raise PropagationError("no reachable cluster node serves the channel's slot")
            by_master.setdefault(address, []).append(channel)
        masters = self._topology.masters
        if len(by_master) == 1:
            ((address, group),) = by_master.items()
            await self._publish_at(masters[address], group, payload)
            return
        results = await asyncio.gather(
            *(self._publish_at(masters[a], g, payload) for a, g in by_master.items()),
            return_exceptions=True,
        )
        errors = [result for result in results if isinstance(result, BaseException)]
        refused = [error for error in errors if isinstance(error, PublishFailed)]
        if refused and len(refused) == len(errors):
            pairs = [pair for failed in refused for pair in failed.errors]
            raise PublishFailed(", ".join(by_master), pairs)
        if errors:
            raise errors[0]

    # --- health ---------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """True while the slot map is known and every subscriber connection is up with its
        subscriptions restored."""
        return self._reachable and super().healthy

    def statistics(self) -> Mapping[str, int]:
        """The counters of :meth:`RedisPropagator.statistics`, summed over the shards, plus
        ``topology_refreshes``, ``topology_refresh_failures``, ``moved_channels`` (channels
        re-homed after a slot moved), ``masters`` and ``subscriber_connections``."""
        stats = dict(super().statistics())
        stats.update(
            topology_refreshes=self.topology_refreshes,
            topology_refresh_failures=self.topology_refresh_failures,
            moved_channels=self._subscribers.moved,
            masters=len(self._topology.masters),
            subscriber_connections=len(self._subscribers.by_address),
        )
        return stats

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
                expected = is_outage(exc)
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
        """Refresh the map unless someone did since ``seen`` (bounded by ``connect_timeout``)."""
        with map_redis_errors("refresh the slot map", self.address):
            async with asyncio.timeout(self._settings.connect_timeout), self._refresh_lock:
                if self.topology_refreshes == seen:
                    await self._refresh()

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
        if changed or self._subscribers.homeless:
            self._subscribers.rehome()
            await self._retire(self._topology.masters)
