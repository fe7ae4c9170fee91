"""Presence: who is online across every instance.

The same behaviour suite (notifykit.testing.presence_checks) runs against the in-memory
presence, RedisPresence on one Redis, and RedisPresence on a 3-master Redis Cluster. Then what
only Redis has: heartbeats and ttls (a crashed instance's users disappear), outages, restarts.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
import textwrap
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from redis.crc import key_slot
from servers import RedisClusterServers, RedisServer

from notifykit.errors import ConfigurationError, PropagationError
from notifykit.memory import MemoryPresence
from notifykit.protocols import Presence
from notifykit.redis.presence import BUCKETS, RedisPresence
from notifykit.testing.presence_checks import (
    PRESENCE_CHECKS,
    PresenceFactory,
    check_presence,
    check_presence_aclose_removes_own_entries_at_once,
    check_presence_calls_are_idempotent,
    check_presence_counts_each_user_once,
    check_presence_keeps_user_online_until_last_connection_leaves,
    check_presence_online_users_respects_limit,
    check_presence_sees_users_of_every_instance,
    check_presence_statistics_map_names_to_counts,
)

TTL = 1.0  # seconds: heartbeats every 1/3 s, so crashes and restarts show quickly
WAIT = 8.0  # seconds any bounded wait in this file may take


def memory_presences(presence_class: type[MemoryPresence] = MemoryPresence) -> PresenceFactory:
    """Presences sharing records per namespace, like instances sharing one Redis."""
    roots: dict[str, MemoryPresence] = {}

    @asynccontextmanager
    async def factory(namespace: str) -> AsyncIterator[Presence]:
        root = roots.setdefault(namespace, presence_class())
        peer = root.peer()
        yield peer

    return factory


def redis_presences(url: str, *, cluster: bool = False, ttl: float = 30.0) -> PresenceFactory:
    """RedisPresences on one server (or cluster); the namespace is the prefix."""

    @asynccontextmanager
    async def factory(namespace: str) -> AsyncIterator[Presence]:
        presence = RedisPresence(url, prefix=namespace, cluster=cluster, ttl=ttl)
        try:
            yield presence
        finally:
            await presence.aclose()

    return factory


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis),
    ]
)
def presences(request: pytest.FixtureRequest) -> PresenceFactory:
    """A presence factory for each implementation notifykit ships."""
    if request.param == "memory":
        return memory_presences()
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return redis_presences(server.url)
    cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
    return redis_presences(cluster.url, cluster=True)


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis),
    ]
)
def redis_url(request: pytest.FixtureRequest) -> tuple[str, bool]:
    """``(url, cluster)`` for one Redis and for the shared Redis Cluster."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return server.url, False
    cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
    return cluster.url, True


async def eventually(
    condition: Callable[[], Awaitable[bool]], what: str, within: float = WAIT
) -> None:
    """Poll ``condition`` every 50 ms until it holds; fail after ``within`` seconds.

    Polling, because what changes is the state of a Redis server, which sends no events."""
    try:
        with anyio.fail_after(within):
            while not await condition():  # noqa: ASYNC110
                await anyio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"{what}: not within {within} s")


async def raises_propagation_error(call: Awaitable[object]) -> bool:
    try:
        await call
    except PropagationError:
        return True
    return False


@asynccontextmanager
async def started(presence: RedisPresence) -> AsyncIterator[RedisPresence]:
    with anyio.fail_after(WAIT):
        await presence.start()
    try:
        yield presence
    finally:
        with anyio.fail_after(WAIT):
            await presence.aclose()


# -- every implementation passes the behaviour suite ----------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("check", PRESENCE_CHECKS, ids=lambda check: check.__name__)
async def test_presence_passes(
    check: Callable[[PresenceFactory], Awaitable[None]], presences: PresenceFactory
) -> None:
    await check(presences)


@pytest.mark.anyio
async def test_memory_presence_passes_the_whole_suite_on_one_board() -> None:
    await check_presence(memory_presences())


# -- the checks catch broken implementations -------------------------------------------------


class DropsEveryLocalConnectionOfTheUser(MemoryPresence):
    async def disconnected(self, user_id: str, connection_id: str) -> None:
        for other in list(self._local.get(user_id, ())):
            await super().disconnected(user_id, other)


class CountsConnections(MemoryPresence):
    async def online_count(self) -> int:
        return sum(len(connections) for connections in self._board.users.values())


class IgnoresTheLimit(MemoryPresence):
    async def online_users(self, limit: int = 10_000) -> list[str]:
        return await super().online_users()


class LeavesItsEntriesOnClose(MemoryPresence):
    async def aclose(self) -> None:
        self._local.clear()
        await super().aclose()


class CountsEveryConnectedCall(MemoryPresence):
    async def connected(self, user_id: str, connection_id: str) -> None:
        await super().connected(user_id, connection_id)
        self._board.add(user_id, connection_id)


class SeesOnlyItsOwnConnections(MemoryPresence):
    async def connections_of(self, user_id: str) -> list[str]:
        return sorted(self._local.get(user_id, ()))


class FloatStatistics(MemoryPresence):
    def statistics(self) -> Mapping[str, int]:
        return {"local_connections": 2.0}  # type: ignore[dict-item]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("broken", "check"),
    [
        (
            DropsEveryLocalConnectionOfTheUser,
            check_presence_keeps_user_online_until_last_connection_leaves,
        ),
        (CountsConnections, check_presence_counts_each_user_once),
        (IgnoresTheLimit, check_presence_online_users_respects_limit),
        (LeavesItsEntriesOnClose, check_presence_aclose_removes_own_entries_at_once),
        (CountsEveryConnectedCall, check_presence_calls_are_idempotent),
        (SeesOnlyItsOwnConnections, check_presence_sees_users_of_every_instance),
        (FloatStatistics, check_presence_statistics_map_names_to_counts),
    ],
    ids=lambda value: value.__name__,
)
async def test_a_presence_check_fails_a_presence_that_breaks_its_rule(
    broken: type[MemoryPresence], check: Callable[[PresenceFactory], Awaitable[None]]
) -> None:
    with pytest.raises(AssertionError):
        await check(memory_presences(broken))


# -- Redis: heartbeats, ttls, crashes -------------------------------------------------------

CRASHING_INSTANCE = textwrap.dedent(
    """
    import asyncio, sys
    from notifykit.redis.presence import RedisPresence

    async def main(url, prefix, cluster):
        presence = RedisPresence(url, prefix=prefix, ttl=1.0, cluster=cluster == "1",
                                 instance_id="doomed")
        await presence.start()
        await presence.connected("victim", "v1")
        await presence.connected("shared", "s-doomed")
        print("ready", flush=True)
        await asyncio.sleep(60)  # killed long before

    asyncio.run(main(*sys.argv[1:]))
    """
)


@pytest.mark.redis
@pytest.mark.anyio
async def test_users_of_a_crashed_instance_disappear_within_the_ttl(
    redis_url: tuple[str, bool],
) -> None:
    url, cluster = redis_url
    prefix = f"crash-{secrets.token_hex(3)}"
    observer = RedisPresence(url, prefix=prefix, ttl=TTL, cluster=cluster)
    async with started(observer):
        await observer.connected("shared", "s-observer")
        command = [sys.executable, "-c", CRASHING_INSTANCE, url, prefix, "1" if cluster else "0"]
        async with await anyio.open_process(command) as process:
            assert process.stdout is not None
            with anyio.fail_after(WAIT):
                assert (await process.stdout.receive()).startswith(b"ready")
            assert await observer.is_online("victim")
            assert sorted(await observer.connections_of("shared")) == ["s-doomed", "s-observer"]
            process.kill()  # SIGKILL: no aclose, no cleanup, heartbeats just stop

        # A crash is noticed through the ttl alone; TTL + 2 heartbeats of slack.
        async def victim_gone() -> bool:
            return not await observer.is_online("victim")

        await eventually(victim_gone, "the crashed instance's user going offline", TTL * 2 + 1)
        assert await observer.connections_of("shared") == ["s-observer"]
        assert await observer.online_users() == ["shared"]
        assert await observer.online_count() == 1


@pytest.mark.redis
@pytest.mark.anyio
async def test_a_crashed_instance_leaves_no_keys_behind(redis_server: RedisServer) -> None:
    crashed = RedisPresence(redis_server.url, prefix="leftovers", ttl=TTL, instance_id="gone")
    await crashed.start()
    await crashed.connected("ghost", "g1")
    assert redis_server.command("KEYS", "leftovers:presence:*:u:ghost")
    # Simulate a crash in-process: stop the heartbeat without aclose()'s cleanup.
    assert crashed._task is not None
    crashed._task.cancel()
    await asyncio.wait([crashed._task])
    await crashed._client.aclose()

    async def no_user_key() -> bool:
        return not redis_server.command("KEYS", "leftovers:presence:*:u:ghost")

    await eventually(no_user_key, "the dead user's key expiring", TTL * 3)


@pytest.mark.redis
@pytest.mark.anyio
async def test_a_heartbeat_keeps_users_online_past_the_ttl(redis_url: tuple[str, bool]) -> None:
    url, cluster = redis_url
    prefix = f"keepalive-{secrets.token_hex(3)}"
    async with (
        started(RedisPresence(url, prefix=prefix, ttl=TTL, cluster=cluster)) as a,
        started(RedisPresence(url, prefix=prefix, ttl=TTL, cluster=cluster)) as b,
    ):
        await a.connected("steady", "c1")
        beats = a.statistics()["heartbeats"]

        async def four_more_beats() -> bool:
            return a.statistics()["heartbeats"] >= beats + 4

        await eventually(four_more_beats, "four heartbeats (more than one ttl)")
        assert await b.connections_of("steady") == ["c1"]
        assert await b.online_users() == ["steady"]


# -- Redis: outages and restarts ------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.anyio
async def test_presence_is_registered_again_after_redis_restarts_empty(
    redis_server: RedisServer,
) -> None:
    async with (
        started(RedisPresence(redis_server.url, prefix="restart", ttl=TTL)) as a,
        started(RedisPresence(redis_server.url, prefix="restart", ttl=TTL)) as b,
    ):
        await a.connected("loyal", "c1")
        await a.connected("loyal", "c2")
        assert await b.online_count() == 1

        redis_server.kill()
        assert await raises_propagation_error(b.is_online("loyal"))

        async def a_unhealthy() -> bool:
            return not a.healthy

        await eventually(a_unhealthy, "the heartbeat noticing the outage")
        assert await raises_propagation_error(a.connected("loyal", "c3"))

        redis_server.restart()  # no persistence: Redis comes back empty
        assert redis_server.command("DBSIZE") == 0  # (restart() blocks the event loop)

        async def registered_again() -> bool:
            try:
                return sorted(await b.connections_of("loyal")) == ["c1", "c2", "c3"]
            except PropagationError:
                return False

        # By design within a heartbeat interval plus backoff jitter; the bound is loose
        # because nothing else could put these entries into the empty Redis.
        await eventually(registered_again, "every local connection registered again")

        async def a_healthy() -> bool:  # the heartbeat's write lands before it says so
            return a.healthy

        await eventually(a_healthy, "the heartbeat reporting Redis back")
        assert a.statistics()["heartbeat_failures"] >= 1
        assert await b.online_users() == ["loyal"]


@pytest.mark.redis
@pytest.mark.anyio
async def test_start_succeeds_while_redis_is_down_and_registers_once_it_is_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path / "late")  # its port is free: nothing listens yet
    presence = RedisPresence(server.url, prefix="late", ttl=TTL)
    try:
        with caplog.at_level(logging.WARNING, "notifykit.redis.presence"):
            async with started(presence):
                assert not presence.healthy
                assert await raises_propagation_error(presence.connected("early", "e1"))
                assert await raises_propagation_error(presence.is_online("early"))
                assert await raises_propagation_error(presence.online_users())
                server.start()

                async def healthy() -> bool:
                    return presence.healthy

                await eventually(healthy, "the heartbeat reaching Redis")
                assert await presence.connections_of("early") == ["e1"]
    finally:
        server.stop()
    assert "heartbeat failed" in caplog.text


@pytest.mark.redis
@pytest.mark.anyio
async def test_aclose_while_redis_is_down_returns_and_leaks_no_task(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    presence = RedisPresence(redis_server.url, prefix="down", ttl=TTL)
    await presence.start()
    await presence.connected("user", "c1")
    redis_server.kill()
    with caplog.at_level(logging.WARNING, "notifykit.redis.presence"), anyio.fail_after(WAIT):
        await presence.aclose()
    assert "expire within" in caplog.text
    assert not [t for t in asyncio.all_tasks() if "presence heartbeat" in t.get_name()]


# -- Redis: batching and concurrency --------------------------------------------------------


@pytest.mark.redis
@pytest.mark.anyio
async def test_a_reconnect_storm_is_written_in_a_few_round_trips(
    redis_url: tuple[str, bool],
) -> None:
    url, cluster = redis_url
    prefix = f"storm-{secrets.token_hex(3)}"
    async with (
        started(RedisPresence(url, prefix=prefix, cluster=cluster)) as a,
        started(RedisPresence(url, prefix=prefix, cluster=cluster)) as b,
    ):
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as group:
                for n in range(2000):
                    group.start_soon(a.connected, f"user-{n % 500}", f"conn-{n}")
        assert a.statistics()["writes"] <= 20  # 2000 calls, batched
        assert a.statistics()["local_connections"] == 2000
        assert await b.online_count() == 500
        assert len(await b.connections_of("user-7")) == 4


@pytest.mark.redis
@pytest.mark.anyio
async def test_a_cancelled_connected_call_still_registers_the_connection(
    redis_server: RedisServer,
) -> None:
    async with (
        started(RedisPresence(redis_server.url, prefix="cancel")) as a,
        started(RedisPresence(redis_server.url, prefix="cancel")) as b,
    ):
        with anyio.move_on_after(0):
            await a.connected("impatient", "c1")

        async def registered() -> bool:
            return await b.is_online("impatient")

        await eventually(registered, "the cancelled caller's connection being written")


@pytest.mark.redis
@pytest.mark.anyio
async def test_prefixes_keep_deployments_apart(redis_server: RedisServer) -> None:
    async with (
        started(RedisPresence(redis_server.url, prefix="app-one")) as one,
        started(RedisPresence(redis_server.url, prefix="app-two")) as two,
    ):
        await one.connected("same-user-id", "c1")
        assert await one.is_online("same-user-id")
        assert not await two.is_online("same-user-id")
        assert await two.online_count() == 0


@pytest.mark.redis
@pytest.mark.anyio
async def test_user_ids_that_are_not_valid_unicode_round_trip(redis_server: RedisServer) -> None:
    odd = "lone \ud800 surrogate"  # JSON allows "\ud800"; UTF-8 does not
    async with (
        started(RedisPresence(redis_server.url, prefix="odd")) as a,
        started(RedisPresence(redis_server.url, prefix="odd")) as b,
    ):
        await a.connected(odd, "c\udfff")
        assert await b.online_users() == [odd]
        assert await b.connections_of(odd) == ["c\udfff"]
        await a.disconnected(odd, "c\udfff")
        assert not await b.is_online(odd)


@pytest.mark.redis
def test_the_online_indexes_spread_over_every_master_of_a_cluster(
    redis_cluster: RedisClusterServers,
) -> None:
    owners = {
        redis_cluster.owner_of(key_slot(f"notifykit:presence:{{{b}}}:online".encode())).port
        for b in range(BUCKETS)
    }
    assert owners == {node.port for node in redis_cluster.nodes}


@pytest.mark.redis
@pytest.mark.anyio
async def test_a_users_key_and_index_share_a_slot(redis_server: RedisServer) -> None:
    async with started(RedisPresence(redis_server.url, prefix="slots")) as presence:
        await presence.connected("odd {user} id", "c1")
        raw = redis_server.command("KEYS", "slots:presence:*")
        keys = sorted(key.decode() for key in raw)
        assert len(keys) == 2
        user_key = next(key for key in keys if key.endswith(":u:odd {user} id"))
        index_key = next(key for key in keys if key.endswith(":online"))
        assert key_slot(user_key.encode()) == key_slot(index_key.encode())


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"ttl": 0},
        {"ttl": -1.0},
        {"ttl": float("nan")},
        {"ttl": float("inf")},
        {"timeout": 0},
        {"instance_id": "has/slash"},
        {"instance_id": ""},
        {"prefix": ""},
        {"prefix": "{tagged}"},
        {"url": "http://127.0.0.1:1/"},
    ],
    ids=repr,
)
def test_settings_that_cannot_work_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        RedisPresence(**settings)  # type: ignore[arg-type]


def test_a_generated_instance_id_is_unique() -> None:
    assert RedisPresence().instance_id != RedisPresence().instance_id


def test_redis_presence_is_a_presence() -> None:
    assert isinstance(RedisPresence(), Presence)
    assert isinstance(MemoryPresence(), Presence)


@pytest.mark.redis
@pytest.mark.anyio
async def test_presence_is_registered_again_after_a_cluster_node_restarts_empty(
    fresh_redis_cluster: RedisClusterServers,
) -> None:
    url = fresh_redis_cluster.url
    async with (
        started(RedisPresence(url, prefix="node", ttl=TTL, cluster=True)) as a,
        started(RedisPresence(url, prefix="node", ttl=TTL, cluster=True)) as b,
    ):
        await a.connected("loyal", "c1")
        bucket = zlib.crc32(b"loyal") % BUCKETS
        slot = key_slot(f"node:presence:{{{bucket}}}:online".encode())
        node = fresh_redis_cluster.owner_of(slot)
        node.kill()
        node.restart()  # no persistence: the node comes back empty, with its slots
        fresh_redis_cluster.wait_until_ok()
        # These calls block the event loop, so no heartbeat could have run meanwhile:
        assert node.command("DBSIZE") == 0

        async def registered_again() -> bool:
            try:
                return await b.connections_of("loyal") == ["c1"]
            except PropagationError:
                return False

        await eventually(registered_again, "the connection registered again on the node")
        assert await b.online_users() == ["loyal"]
