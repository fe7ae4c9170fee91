"""The Redis propagator: per-key channels on one Redis server (or a replicated primary).

Each routing key is one channel, ``<prefix>:<key>`` (``notifykit:u:42``), and an instance
subscribes to a channel only while it holds a connection under that key, so a notification for
one user reaches only the instances that hold that user. See ``docs/redis.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import PropagationError
from ._base import RedisPropagatorBase
from ._connection import Settings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._connection import Endpoint
    from ._publisher import Publisher
    from ._subscriber import Subscriber

__all__ = ["RedisPropagator"]


class RedisPropagator(RedisPropagatorBase):
    """:class:`~notifykit.protocols.Propagator` over Redis pub/sub (asyncio only).

    ``url`` is a ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL with the password and
    database in it (``redis://:secret@redis.internal:6379/2``). ``prefix`` namespaces the
    channels so several applications can share one Redis.

    Tunables (seconds): ``connect_timeout`` bounds a connection attempt (handshake included);
    ``command_timeout`` bounds a publish round trip, a publish's wait for the subscriber to get
    its subscriptions back after a reconnection, and the watchdog's wait for a ``PING``
    answer; ``health_check_interval`` is how often the watchdog pings the subscriber
    connection; reconnection waits grow from ``backoff_initial`` to ``backoff_max``, jittered.
    ``max_pending_publishes`` bounds the publish queue (callers wait beyond it);
    ``client_name`` names the connections in ``CLIENT LIST`` (``<name>-sub``, ``<name>-pub``).

    ``start()`` never fails because Redis is down: the propagator reports ``healthy = False``
    and keeps reconnecting; ``subscribe()`` waits for the connection (bound it with a timeout,
    as the hub does) and ``publish()`` raises :class:`~notifykit.errors.PropagationError`.
    After a reconnection it subscribes again to every current channel by itself, and is
    healthy again once Redis has confirmed every one. Raises
    :class:`~notifykit.errors.ConfigurationError` for an unusable URL or setting.
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
        settings = Settings(
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            health_check_interval=health_check_interval,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            max_pending_publishes=max_pending_publishes,
            client_name=client_name,
        )
        super().__init__(url, prefix, settings, cluster=False)
        self._the_publisher: Publisher | None = None
        self._the_subscriber: Subscriber | None = None

    def _locate(self, channel: bytes) -> Endpoint:
        return self._endpoint

    async def _begin(self) -> None:
        self._the_publisher = self._publisher(self._endpoint)
        self._the_subscriber = subscriber = self._subscribers.at(self._endpoint)
        await subscriber.wait_first_attempt(self._settings.connect_timeout + 1.0)

    async def publish(self, keys: Sequence[str], payload: bytes) -> None:
        """``PUBLISH`` ``payload`` to each key's channel, pipelined with concurrent calls.

        Raises :class:`~notifykit.errors.PropagationError` if Redis did not accept them all,
        or if this instance would not receive them itself: while its subscriber connection is
        getting its subscriptions back after a reconnection, a publish waits for it up to
        ``command_timeout``, then raises.
        """
        # _publish_at() with the one server's connections at hand: this is the hot path.
        publisher, subscriber = self._the_publisher, self._the_subscriber
        if publisher is None or subscriber is None or self._closed:
            raise PropagationError("the propagator is not running")
        if not subscriber.healthy:
            await self._ready(publisher)
        await publisher.publish(self._names.channels(keys), payload)
