"""RedisClusterPropagator against a real 3-master Redis Cluster: sharded routing, one subscriber
connection per master, and following slots when a master restarts or a slot moves.

The contract every propagator keeps is in test_conformance_redis.py.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.crc import key_slot
from servers import FAST_RECOVERY, Recorder, RedisClusterServers, RedisServer, eventually

from notifykit.errors import ConfigurationError, PropagationError
from notifykit.redis import RedisClusterPropagator, propagator_from_url
from notifykit.redis._channels import ChannelNames

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

PREFIX = "nk-cluster"


@asynccontextmanager
async def running(
    url: str, recorder: Recorder | None = None, **options: Any
) -> AsyncIterator[RedisClusterPropagator]:
    propagator = RedisClusterPropagator(url, prefix=PREFIX, **options)
    await propagator.start(recorder if recorder is not None else Recorder())
    try:
        yield propagator
    finally:
        await propagator.aclose()


NAMES = ChannelNames(PREFIX, cluster=True)


def slot_of(key: str) -> int:
    return key_slot(NAMES.channel(key))


def keys_by_master(cluster: RedisClusterServers, per_master: int) -> dict[int, list[str]]:
    """``per_master`` fresh keys served by each master, by the master's port."""
    run = secrets.token_hex(3)
    found: dict[int, list[str]] = {node.port: [] for node in cluster.nodes}
    index = 0
    while any(len(keys) < per_master for keys in found.values()):
        key = f"u:{run}-{index}"
        owner = cluster.owner_of(slot_of(key)).port
        if len(found[owner]) < per_master:
            found[owner].append(key)
        index += 1
    return found


def shard_channels(node: RedisServer) -> set[bytes]:
    return set(node.command("PUBSUB", "SHARDCHANNELS", f"{PREFIX}:*"))


async def publish_until_received(
    publisher: RedisClusterPropagator, recorder: Recorder, key: str, payload: bytes
) -> None:
    """Publish and wait for it, again and again while the cluster is still recovering."""
    with anyio.fail_after(20):
        while payload not in recorder.payloads(key):
            try:
                await publisher.publish([key], payload)
                await recorder.wait_for(key, payload, within=0.5)
            except (PropagationError, TimeoutError):
                await anyio.sleep(0.05)


# --- routing over the shards --------------------------------------------------------------


async def test_channels_live_on_their_shard_with_one_subscriber_connection_per_master(
    redis_cluster: RedisClusterServers,
) -> None:
    by_master = keys_by_master(redis_cluster, 4)
    keys = [key for group in by_master.values() for key in group]
    name = f"nk{secrets.token_hex(3)}"
    async with running(redis_cluster.url, client_name=name) as propagator:
        await propagator.subscribe(keys)

        assert propagator.statistics()["subscriber_connections"] == 3
        for node in redis_cluster.nodes:
            expected = {NAMES.channel(key) for key in by_master[node.port]}
            assert expected <= shard_channels(node)
            others = {NAMES.channel(key) for key in keys} - expected
            assert not others & shard_channels(node), "a channel is held by the wrong shard"
            assert len(node.pubsub_clients(f"{name}-sub")) == 1


async def test_a_payload_reaches_exactly_the_subscribers_of_its_key_on_any_shard(
    redis_cluster: RedisClusterServers,
) -> None:
    by_master = keys_by_master(redis_cluster, 2)
    first = [group[0] for group in by_master.values()]
    second = [group[1] for group in by_master.values()]
    everyone, some = Recorder(), Recorder()
    async with (
        running(redis_cluster.url, everyone) as a,
        running(redis_cluster.url, some) as b,
        running(redis_cluster.url) as publisher,
    ):
        await a.subscribe(first + second)
        await b.subscribe(second)
        for key in first + second:
            await publisher.publish([key], b"to " + key.encode())
        for key in first + second:
            await everyone.wait_for(key, b"to " + key.encode())
        for key in second:
            await some.wait_for(key, b"to " + key.encode())
        await anyio.sleep(0.1)

        assert sorted(everyone.log) == sorted((k, b"to " + k.encode()) for k in first + second)
        assert sorted(some.log) == sorted((k, b"to " + k.encode()) for k in second)
        assert b.statistics()["received"] == len(second)  # nothing else reached it


async def test_a_publish_to_keys_on_every_shard_is_one_pipeline_per_master(
    redis_cluster: RedisClusterServers,
) -> None:
    by_master = keys_by_master(redis_cluster, 20)
    keys = [key for group in by_master.values() for key in group]
    recorder = Recorder()
    async with (
        running(redis_cluster.url, recorder) as subscriber,
        running(redis_cluster.url) as publisher,
    ):
        await subscriber.subscribe(keys)
        await publisher.publish(keys, b"warm-up")  # opens one publisher connection per master
        await eventually(lambda: len(recorder.log) == 60)
        before = publisher.statistics()
        await publisher.publish(keys, b"sixty at once")
        after = publisher.statistics()

        assert after["published"] - before["published"] == 60
        assert after["publish_batches"] - before["publish_batches"] == 3
        await eventually(lambda: len(recorder.log) == 120)


async def test_a_storm_of_subscribes_is_coalesced_into_few_round_trips_per_shard(
    redis_cluster: RedisClusterServers,
) -> None:
    run = secrets.token_hex(3)
    async with running(redis_cluster.url) as propagator:
        async with anyio.create_task_group() as tasks:
            for index in range(300):
                tasks.start_soon(propagator.subscribe, [f"u:{run}-{index}"])
        batches = propagator.statistics()["subscribe_batches"]
        assert batches <= 9, f"300 subscribe() calls took {batches} writes over 3 shards"
        held = sum(len(shard_channels(node)) for node in redis_cluster.nodes)
        assert held >= 300


# --- configuration ------------------------------------------------------------------------


async def test_a_prefix_with_a_hash_tag_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="must not contain"):
        RedisClusterPropagator(prefix="{app}")
    built = propagator_from_url("redis://127.0.0.1:1", cluster=True)
    assert isinstance(built, RedisClusterPropagator)


async def test_a_standalone_server_is_reported_not_served(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(redis_server.url, **FAST_RECOVERY) as propagator:
        assert propagator.healthy is False
        with pytest.raises(PropagationError):
            await propagator.publish(["u:1"], b"x")
    assert any("cluster support disabled" in record.getMessage() for record in caplog.records)


# --- outages ------------------------------------------------------------------------------


async def test_start_succeeds_before_the_cluster_exists_and_subscribe_waits_for_it(
    tmp_path: Path,
) -> None:
    cluster = RedisClusterServers(tmp_path / "later")  # ports chosen, nothing listens yet
    recorder = Recorder()
    try:
        async with running(cluster.url, recorder, **FAST_RECOVERY) as propagator:
            assert propagator.healthy is False
            with pytest.raises(PropagationError):
                await propagator.publish(["u:1"], b"nobody there")
            subscribed = anyio.Event()

            async def subscribe() -> None:
                await propagator.subscribe(["u:1", "u:2", "u:3"])
                subscribed.set()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(subscribe)
                with anyio.move_on_after(0.3):
                    await subscribed.wait()
                assert not subscribed.is_set(), "subscribe() returned with no cluster"
                cluster.start()
                with anyio.fail_after(15):
                    await subscribed.wait()
            await eventually(lambda: propagator.healthy)
            await propagator.publish(["u:2"], b"now it works")
            await recorder.wait_for("u:2", b"now it works")
    finally:
        cluster.stop()


async def test_a_killed_and_restarted_master_gets_its_subscriptions_back(
    fresh_redis_cluster: RedisClusterServers,
) -> None:
    cluster = fresh_redis_cluster
    by_master = keys_by_master(cluster, 3)
    victim, survivor = cluster.nodes[1], cluster.nodes[0]
    keys = [key for group in by_master.values() for key in group]
    recorder = Recorder()
    async with (
        running(cluster.url, recorder, **FAST_RECOVERY) as subscriber,
        running(cluster.url, **FAST_RECOVERY) as publisher,
    ):
        await subscriber.subscribe(keys)
        victim.kill()
        await eventually(lambda: not subscriber.healthy)
        with pytest.raises(PropagationError):
            await publisher.publish([by_master[victim.port][0]], b"to the dead shard")
        # The other shards keep working meanwhile.
        survivor_key = by_master[survivor.port][0]
        await publish_until_received(publisher, recorder, survivor_key, b"while one is down")

        victim.restart()
        cluster.wait_until_ok()
        await eventually(lambda: subscriber.healthy)
        for key in by_master[victim.port]:
            await publish_until_received(publisher, recorder, key, b"after the restart")
        stats = subscriber.statistics()
        assert stats["reconnects"] >= 1
        assert stats["resubscribed_channels"] >= 3


async def test_subscribers_and_publishers_follow_a_slot_to_its_new_master(
    fresh_redis_cluster: RedisClusterServers,
) -> None:
    cluster = fresh_redis_cluster
    key = keys_by_master(cluster, 1)[cluster.nodes[0].port][0]
    slot, channel = slot_of(key), NAMES.channel(key)
    old, new = cluster.nodes[0], cluster.nodes[2]
    recorder = Recorder()
    async with (
        running(cluster.url, recorder, **FAST_RECOVERY) as subscriber,
        running(cluster.url, **FAST_RECOVERY) as publisher,
    ):
        await subscriber.subscribe([key])
        await publisher.publish([key], b"before the move")
        await recorder.wait_for(key, b"before the move")

        cluster.move_slot(slot, new)
        await eventually(lambda: channel in shard_channels(new))  # resubscribed by itself
        assert channel not in shard_channels(old)
        # The publisher's slot map is stale: its SPUBLISH gets MOVED, it refreshes and retries.
        await publisher.publish([key], b"after the move")
        await recorder.wait_for(key, b"after the move")
        await anyio.sleep(0.1)

        assert recorder.payloads(key) == [b"before the move", b"after the move"]
        assert subscriber.statistics()["moved_channels"] == 1
        assert subscriber.statistics()["topology_refreshes"] >= 2
        assert publisher.statistics()["topology_refreshes"] >= 2
        assert subscriber.healthy
