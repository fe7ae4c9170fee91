"""Redis and Redis Cluster propagators (asyncio only: redis-py's asyncio client needs asyncio).

* :class:`RedisPropagator` — per-key channels on one Redis (``PUBLISH``/``SUBSCRIBE``).
* :class:`RedisClusterPropagator` — the same over a Redis Cluster with sharded pub/sub
  (``SPUBLISH``/``SSUBSCRIBE``, Redis 7+), one subscriber connection per shard.
* :class:`RedisPresence` — cluster-wide presence with per-instance heartbeats.
* :func:`propagator_from_url` — build either from settings (what the CLI uses).
* :class:`RedisSyncPublisher` — publish from synchronous code (Django views, Celery tasks),
  with no event loop and no hub.

Design, configuration and outage behaviour: ``docs/redis.md``.
"""

from __future__ import annotations

from typing import Any

from .cluster import RedisClusterPropagator
from .presence import RedisPresence
from .propagator import RedisPropagator
from .sync import RedisSyncPublisher

__all__ = [
    "RedisClusterPropagator",
    "RedisPresence",
    "RedisPropagator",
    "RedisSyncPublisher",
    "propagator_from_url",
]


def propagator_from_url(
    url: str, *, cluster: bool = False, **options: Any
) -> RedisPropagator | RedisClusterPropagator:
    """A :class:`RedisClusterPropagator` if ``cluster``, else a :class:`RedisPropagator`, for
    ``url``; ``options`` are the constructor's keyword arguments (``prefix``, timeouts...).

    Raises :class:`~notifykit.errors.ConfigurationError` for an unusable URL or option, and
    ``TypeError`` for an unknown option name.
    """
    if cluster:
        return RedisClusterPropagator(url, **options)
    return RedisPropagator(url, **options)
