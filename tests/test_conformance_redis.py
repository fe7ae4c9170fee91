"""The Redis propagators pass the conformance suite (notifykit.testing.conformance), against a
real redis-server and a real 3-master Redis Cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from servers import RedisClusterServers, RedisServer

from notifykit.protocols import Propagator
from notifykit.redis import RedisClusterPropagator, RedisPropagator
from notifykit.testing.conformance import (
    HISTORY_CHECKS,
    PROPAGATOR_CHECKS,
    PropagatorFactory,
    check_history_off_reads_nothing,
)

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


def propagators(
    kind: type[RedisPropagator | RedisClusterPropagator], url: str, *, history_size: int = 100
) -> PropagatorFactory:
    """New propagators of ``kind`` on one server or cluster, like the instances of a deployment."""

    @asynccontextmanager
    async def factory() -> AsyncIterator[Propagator]:
        propagator = kind(url, prefix="nk-conformance", history_size=history_size)
        try:
            yield propagator
        finally:
            await propagator.aclose()

    return factory


@pytest.mark.parametrize("check", PROPAGATOR_CHECKS, ids=lambda check: check.__name__)
async def test_redis_propagator_passes(
    check: Callable[[PropagatorFactory], Awaitable[None]], redis_server: RedisServer
) -> None:
    await check(propagators(RedisPropagator, redis_server.url))


@pytest.mark.parametrize("check", PROPAGATOR_CHECKS, ids=lambda check: check.__name__)
async def test_redis_cluster_propagator_passes(
    check: Callable[[PropagatorFactory], Awaitable[None]], redis_cluster: RedisClusterServers
) -> None:
    await check(propagators(RedisClusterPropagator, redis_cluster.url))


@pytest.mark.parametrize("check", HISTORY_CHECKS, ids=lambda check: check.__name__)
async def test_redis_history_passes(
    check: Callable[[PropagatorFactory], Awaitable[None]], redis_server: RedisServer
) -> None:
    await check(propagators(RedisPropagator, redis_server.url))


@pytest.mark.parametrize("check", HISTORY_CHECKS, ids=lambda check: check.__name__)
async def test_redis_cluster_history_passes(
    check: Callable[[PropagatorFactory], Awaitable[None]], redis_cluster: RedisClusterServers
) -> None:
    await check(propagators(RedisClusterPropagator, redis_cluster.url))


@pytest.mark.parametrize("kind", [RedisPropagator, RedisClusterPropagator])
async def test_redis_propagators_without_history_pass_their_check(
    kind: type[RedisPropagator | RedisClusterPropagator], request: pytest.FixtureRequest
) -> None:
    fixture = "redis_cluster" if kind is RedisClusterPropagator else "redis_server"
    url = request.getfixturevalue(fixture).url
    await check_history_off_reads_nothing(propagators(kind, url, history_size=0))
