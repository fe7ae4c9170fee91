"""Resume through a hub on every backend: memory, Redis and Redis Cluster.

The hub's catch-up is backend-agnostic (test_resume.py proves it in memory, in depth); these
run its scenarios (the functions it shares) — and the property of test_resume_properties.py —
over real Redis servers too, where history lives in Redis streams, live delivery comes through
pub/sub, and the barrier is a PING.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from servers import RedisClusterServers, RedisServer
from test_resume import (
    Book,
    TokenIsUser,
    another_epoch_not_recovered,
    beyond_retention_not_recovered,
    connect,
    missed_then_live,
    notifications,
    resume_under_load,
    topic_since_replays,
    welcome,
)
from test_resume_properties import AWAY_A_LITTLE, AWAY_TOO_LONG, HISTORY, run, steps

from notifykit import Hub
from notifykit.gateway import Gateway
from notifykit.memory import MemoryBus, MemoryPropagator
from notifykit.protocols import Propagator
from notifykit.redis import RedisClusterPropagator, RedisPropagator

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

Backend = Callable[..., Propagator]
"""Makes a propagator on the test's backend (``history_size=`` may be passed); all those of one
test share it, like the instances of one deployment."""


@pytest.fixture(params=["memory", "redis", "cluster"])
def backend(request: pytest.FixtureRequest) -> Backend:
    prefix = f"resume-{secrets.token_hex(4)}"  # fresh streams for every test
    buses: dict[int, MemoryBus] = {}

    def make(history_size: int = 100) -> Propagator:
        if request.param == "memory":
            bus = buses.setdefault(history_size, MemoryBus(history_size=history_size))
            return MemoryPropagator(bus)
        if request.param == "redis":
            server: RedisServer = request.getfixturevalue("redis_server")
            return RedisPropagator(server.url, prefix=prefix, history_size=history_size)
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        return RedisClusterPropagator(cluster.url, prefix=prefix, history_size=history_size)

    return make


async def test_a_resuming_client_gets_what_it_missed_in_order_then_live(backend: Backend) -> None:
    async with Hub(backend()) as hub:
        await missed_then_live(hub)


async def test_a_resume_on_another_instance_recovers_what_was_missed(backend: Backend) -> None:
    async with Hub(backend()) as first, Hub(backend()) as second, Hub(backend()) as publisher:
        book = Book()
        async with connect(Gateway(first, TokenIsUser()), "42") as client:
            book.welcomed(await welcome(client))
            await publisher.notify_user("42", "seen")
            book.took((await notifications(client, 1))[0])
        missed = [await publisher.notify_user("42", "offline", n) for n in range(3)]
        async with connect(Gateway(second, TokenIsUser()), "42", book.positions) as client:
            greeting = await welcome(client)
            assert greeting.recovered is True
            assert [n.id for n in await notifications(client, 3)] == missed


async def test_a_resume_from_another_epoch_is_not_recovered(backend: Backend) -> None:
    async with Hub(backend()) as hub:
        await another_epoch_not_recovered(hub)


async def test_a_resume_beyond_retention_is_not_recovered(backend: Backend) -> None:
    async with Hub(backend(history_size=3)) as hub:
        await beyond_retention_not_recovered(hub)


async def test_a_topic_subscribe_since_replays_what_was_missed(backend: Backend) -> None:
    async with Hub(backend()) as hub:
        await topic_since_replays(hub)


async def test_the_history_of_a_stream_reads_back_as_frames(backend: Backend) -> None:
    async with Hub(backend()) as hub:
        sent = [await hub.notify_user("42", "inbox", n) for n in range(4)]
        page = await hub.history("u:42", after=1, limit=2)
        assert (page.last, page.first) == (4, 1)
        assert len(page.notifications) == 2
        assert sent[1] in page.notifications[0]
        assert sent[2] in page.notifications[1]


async def test_resuming_while_notifications_keep_coming_loses_and_repeats_nothing(
    backend: Backend,
) -> None:
    async with (
        Hub(backend(history_size=10_000)) as publisher,
        Hub(backend(history_size=10_000)) as server,
    ):
        await resume_under_load(publisher, server, total=400, clients=3, rounds=6)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=steps)
async def test_on_redis_any_interleaving_delivers_everything_within_retention_once_in_order(
    script: list[tuple[str, object]], redis_server: RedisServer
) -> None:
    # Fresh streams for every example: the model starts from empty ones.
    prefix = f"prop-{secrets.token_hex(4)}"
    await run(script, RedisPropagator(redis_server.url, prefix=prefix, history_size=HISTORY))


@pytest.mark.parametrize("script", [AWAY_TOO_LONG, AWAY_A_LITTLE], ids=["too-long", "a-little"])
async def test_on_a_cluster_the_property_examples_hold(
    script: list[tuple[str, object]], redis_cluster: RedisClusterServers
) -> None:
    prefix = f"prop-{secrets.token_hex(4)}"
    await run(
        script, RedisClusterPropagator(redis_cluster.url, prefix=prefix, history_size=HISTORY)
    )
