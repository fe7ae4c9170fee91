"""Publishing from synchronous code — Django views and signals, Celery tasks, management
commands, cron scripts — with no event loop and no running hub.

::

    from notifykit.redis import RedisSyncPublisher

    publisher = RedisSyncPublisher("redis://redis.internal:6379/0")   # once, at import
    publisher.notify_user("42", "order.shipped", {"order": 7})         # anywhere, any thread

A notification is encoded exactly as :meth:`Hub.publish <notifykit.hub.Hub.publish>` encodes it
(:func:`notifykit.envelope.pack`) and ``PUBLISH``-ed to the same per-key channels
(``SPUBLISH`` on a Redis Cluster), so every instance of the deployment delivers it as if one of
its own hubs had published it. Each call is one round trip on redis-py's blocking client, whose
connection pool makes the publisher safe to share between threads.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Self

import redis
from redis.cluster import RedisCluster

from ..envelope import Envelope, IdGenerator, pack
from ..errors import ConfigurationError
from ..model import Target, ToAuthenticated, ToEveryone, ToTopic, ToUsers, users
from ._channels import ChannelNames
from ._connection import Endpoint
from ._errors import map_redis_errors

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType

__all__ = ["RedisSyncPublisher"]


class RedisSyncPublisher:
    """Publishes notifications to a notifykit deployment on Redis from synchronous code.

    ``url`` and ``prefix`` must match the deployment's propagator (``RedisPropagator``, or
    ``RedisClusterPropagator`` with ``cluster=True``). ``timeout`` bounds connecting and each
    publish, in seconds. Methods mirror the hub's and return the notification's id; they raise
    :class:`~notifykit.errors.InvalidNotification` for a bad event, target or data and
    :class:`~notifykit.errors.PropagationError` if Redis did not take the notification.
    ``close()`` (or ``with``) releases the connections.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "notifykit",
        cluster: bool = False,
        timeout: float = 5.0,
    ) -> None:
        self._address = Endpoint.from_url(url).address  # checks the URL
        self._names = ChannelNames(prefix, cluster=cluster)
        if not isinstance(timeout, int | float) or not timeout > 0:
            raise ConfigurationError(f"timeout must be seconds above 0, not {timeout!r}")
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "protocol": 2,
        }
        self._client: redis.Redis | RedisCluster
        with map_redis_errors("connect", self._address):  # a cluster client reads the slot map
            if cluster:
                self._client = RedisCluster.from_url(url, **options)
            else:
                self._client = redis.Redis.from_url(url, **options)
        self._ids = IdGenerator()
        self._ids_lock = threading.Lock()  # ids stay unique and increasing across threads

    def publish(
        self, target: Target, event: str, data: Any = None, *, exclude: str | None = None
    ) -> str:
        """Send one notification to ``target``; return its id."""
        with self._ids_lock:
            notification_id = self._ids()
        envelope = Envelope(notification_id, event, data, target, exclude)
        payload = pack(envelope)
        channels = self._names.channels(envelope.keys())
        with map_redis_errors("publish", self._address):
            if isinstance(self._client, RedisCluster):
                for channel in channels:  # each channel's shard, found by its slot
                    self._client.spublish(channel, payload)
            else:
                with self._client.pipeline(transaction=False) as pipeline:
                    for channel in channels:
                        pipeline.publish(channel, payload)
                    pipeline.execute()
        return envelope.id

    def notify_user(
        self, user_id: str, event: str, data: Any = None, *, exclude: str | None = None
    ) -> str:
        """Send to every connection of one user, on every instance."""
        return self.publish(ToUsers((user_id,)), event, data, exclude=exclude)

    def notify_users(
        self, user_ids: Iterable[str], event: str, data: Any = None, *, exclude: str | None = None
    ) -> str:
        """Send to every connection of each user (one notification id for all of them)."""
        return self.publish(users(user_ids), event, data, exclude=exclude)

    def notify_topic(
        self, topic: str, event: str, data: Any = None, *, exclude: str | None = None
    ) -> str:
        """Send to every connection subscribed to ``topic``."""
        return self.publish(ToTopic(topic), event, data, exclude=exclude)

    def notify_authenticated(
        self, event: str, data: Any = None, *, exclude: str | None = None
    ) -> str:
        """Send to every authenticated connection."""
        return self.publish(ToAuthenticated(), event, data, exclude=exclude)

    def broadcast(self, event: str, data: Any = None, *, exclude: str | None = None) -> str:
        """Send to every connection, anonymous ones included."""
        return self.publish(ToEveryone(), event, data, exclude=exclude)

    def close(self) -> None:
        """Close the connections (a later publish opens new ones). Idempotent."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
