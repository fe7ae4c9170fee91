"""The Redis propagator: per-key channels on one Redis server (or a replicated primary).

Each routing key is one channel, ``<prefix>:<key>`` (``notifykit:u:42``), and an instance
subscribes to a channel only while it holds a connection under that key, so a notification for
one user reaches only the instances that hold that user. See ``docs/redis.md``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from ..errors import ConfigurationError, PropagationError
from ._connection import Endpoint, Settings
from ._publisher import Publisher
from ._subscriber import Subscriber
from ._waiters import Waiter, Waiters

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from redis.exceptions import ResponseError

    from ..model import StreamHistory
    from ..protocols import Deliver

__all__ = ["RedisPropagator"]

logger = logging.getLogger("notifykit.redis")


def channel_prefix(prefix: str) -> bytes:
    """``prefix`` as the bytes every channel starts with (``b"notifykit:"``)."""
    if not isinstance(prefix, str) or not prefix or any(c.isspace() for c in prefix):
        raise ConfigurationError("the Redis channel prefix must be a non-empty word")
    return prefix.encode("utf-8") + b":"


class RedisPropagator:
    """:class:`~notifykit.protocols.Propagator` over Redis pub/sub (asyncio only).

    ``url`` is a ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL with the password and
    database in it (``redis://:secret@redis.internal:6379/2``). ``prefix`` namespaces the
    channels so several applications can share one Redis.

    Tunables (seconds): ``connect_timeout`` bounds a connection attempt (handshake included);
    ``command_timeout`` bounds a publish round trip and the watchdog's wait for a ``PING``
    answer; ``health_check_interval`` is how often the watchdog pings the subscriber
    connection; reconnection waits grow from ``backoff_initial`` to ``backoff_max``, jittered.
    ``max_pending_publishes`` bounds the publish queue (callers wait beyond it);
    ``client_name`` names the connections in ``CLIENT LIST`` (``<name>-sub``, ``<name>-pub``).

    ``start()`` never fails because Redis is down: the propagator reports ``healthy = False``
    and keeps reconnecting; ``subscribe()`` waits for the connection (bound it with a timeout,
    as the hub does) and ``publish()`` raises :class:`~notifykit.errors.PropagationError`.
    After a reconnection it subscribes again to every current channel by itself.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "notifykit",
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        health_check_interval: float = 5.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 10.0,
        max_pending_publishes: int = 10_000,
        client_name: str = "notifykit",
    ) -> None:
        self._endpoint = Endpoint.from_url(url)
        self._settings = Settings(
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            health_check_interval=health_check_interval,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            max_pending_publishes=max_pending_publishes,
            client_name=client_name,
        )
        self._prefix = channel_prefix(prefix)
        self._routes: dict[bytes, str] = {}
        self._waiters = Waiters()
        self._subscriber: Subscriber | None = None
        self._publisher: Publisher | None = None
        self._started = False
        self._closed = False
        self.rejected_subscriptions = 0

    @property
    def address(self) -> str:
        """``host:port`` of the Redis server (no credentials)."""
        return self._endpoint.address

    async def start(self, deliver: Deliver) -> None:
        """Connect (waiting at most ``connect_timeout`` for the first attempt) and start.

        Returns even if Redis is unreachable; ``healthy`` then says so.
        """
        if self._started:
            raise RuntimeError("this propagator was already started")
        self._started = True
        self._subscriber = Subscriber(
            self._endpoint,
            self._settings,
            self,
            self._routes,
            self._prefix,
            sharded=False,
            rng=random.Random(),
        )
        self._publisher = Publisher(self._endpoint, self._settings, sharded=False)
        self._subscriber.start(deliver)
        self._publisher.start()
        await self._subscriber.wait_first_attempt(self._settings.connect_timeout + 1.0)

    async def aclose(self) -> None:
        """Close both connections; pending ``subscribe()`` calls raise. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._waiters.fail_all(lambda: PropagationError("the propagator is closed"))
        if self._subscriber is not None:
            await self._subscriber.aclose()
        if self._publisher is not None:
            await self._publisher.aclose()
        self._routes.clear()

    async def subscribe(self, keys: Collection[str]) -> None:
        """Subscribe to the channels of ``keys``; return once Redis confirmed every one.

        While Redis is unreachable this waits for the reconnection.
        """
        subscriber = self._subscriber
        if subscriber is None or self._closed:
            raise PropagationError("the propagator is not running")
        prefix, routes = self._prefix, self._routes
        waiter: Waiter | None = None
        for key in keys:
            channel = prefix + key.encode("utf-8", "surrogatepass")
            routes[channel] = key
            if not subscriber.want(channel):
                if waiter is None:
                    waiter = Waiter()
                self._waiters.add(channel, waiter)
        if waiter is not None:
            await waiter.wait()

    async def unsubscribe(self, keys: Collection[str]) -> None:
        """Stop delivering ``keys`` at once; the ``UNSUBSCRIBE`` follows in the background."""
        subscriber = self._subscriber
        if subscriber is None or self._closed:
            return
        prefix, routes = self._prefix, self._routes
        for key in keys:
            channel = prefix + key.encode("utf-8", "surrogatepass")
            routes.pop(channel, None)
            subscriber.unwant(channel)
            self._waiters.release(channel)
        await asyncio.sleep(0)

    async def barrier(self, keys: Collection[str]) -> None:
        """No history yet on Redis: nothing to wait for."""

    async def read(self, after: Mapping[str, int | None], limit: int) -> dict[str, StreamHistory]:
        """No history yet on Redis: ``{}`` (clients are told positions only when a history is
        kept; a resume is answered ``recovered: false``)."""
        return {}

    async def publish(self, keys: Sequence[str], payload: bytes) -> None:
        """``PUBLISH`` ``payload`` to each key's channel, pipelined with concurrent calls.

        Raises :class:`~notifykit.errors.PropagationError` if Redis did not accept them all.
        """
        publisher = self._publisher
        if publisher is None or self._closed:
            raise PropagationError("the propagator is not running")
        prefix = self._prefix
        await publisher.publish(
            [prefix + key.encode("utf-8", "surrogatepass") for key in keys], payload
        )

    @property
    def healthy(self) -> bool:
        """True while the subscriber connection is up."""
        subscriber = self._subscriber
        return subscriber is not None and not self._closed and subscriber.connected

    def statistics(self) -> Mapping[str, int]:
        """Counters: ``published`` (commands), ``publish_batches`` (pipelines),
        ``publish_errors``, ``received``, ``subscriptions`` (channels wanted now),
        ``subscribe_batches`` (writes of ``SUBSCRIBE``/``UNSUBSCRIBE`` commands),
        ``reconnects``, ``resubscribed_channels``, ``connect_failures``,
        ``watchdog_repairs``, ``lost_subscriptions``, ``malformed``, ``deliver_errors``,
        ``dropped_unsubscribed`` (late messages for channels just left), ``connected``."""
        stats = dict.fromkeys((*Subscriber.COUNTERS, *Publisher.COUNTERS), 0)
        if self._subscriber is not None:
            stats.update(self._subscriber.counters())
        if self._publisher is not None:
            stats.update(self._publisher.counters())
        stats["subscriptions"] = len(self._subscriber.wanted) if self._subscriber else 0
        stats["rejected_subscriptions"] = self.rejected_subscriptions
        stats["connected"] = int(self.healthy)
        return stats

    # --- what the subscriber reports ------------------------------------------------------

    def on_confirmed(self, channel: bytes) -> None:
        """Release the callers waiting for ``channel``."""
        self._waiters.release(channel)

    def on_rejected(
        self, subscriber: Subscriber, channels: list[bytes], error: ResponseError
    ) -> None:
        """Fail the callers waiting for ``channels`` and stop wanting them."""
        self.rejected_subscriptions += len(channels)
        logger.error(
            "Redis at %s refused to subscribe to %d channel(s): %s",
            self.address,
            len(channels),
            error,
        )
        message = f"Redis at {self.address} refused the subscription: {error}"
        for channel in channels:
            subscriber.unwant(channel)
            self._waiters.fail(channel, lambda: PropagationError(message))

    def on_lost(self, subscriber: Subscriber, channels: list[bytes]) -> None:
        """Subscribe again: one server has nowhere else to send us."""
        logger.warning(
            "Redis at %s dropped %d subscription(s); resubscribing", self.address, len(channels)
        )
        subscriber.resync(channels)

    def on_connection_change(self, subscriber: Subscriber, connected: bool) -> None:
        """Nothing to do: the subscriber reconnects and resubscribes by itself."""
