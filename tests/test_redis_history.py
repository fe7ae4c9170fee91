"""History on Redis and Redis Cluster against real redis-server processes: where it lives, how
long, what survives a restart, and what a subscriber that was cut off gets back.

The contract every propagator keeps is in test_conformance_redis.py (the history checks
included); the sequencer's every ordering case is in test_redis_sequencer.py. Here: the Redis
parts of it — the layout and the Lua scripts, retention by count and age, ``NOSCRIPT``, the
barrier, gap repair after a killed connection, Redis restarted with and without persistence.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.crc import key_slot
from servers import FAST_RECOVERY, Recorder, RedisClusterServers, RedisServer, eventually
from test_resume import Book, TokenIsUser, connect, notifications, welcome

from notifykit import Hub
from notifykit.cli import build_parser
from notifykit.cli.backends import build_backends
from notifykit.cli.settings import read_settings
from notifykit.errors import ConfigurationError, PropagationError
from notifykit.gateway import Gateway
from notifykit.redis import RedisClusterPropagator, RedisPropagator
from notifykit.redis._channels import ChannelNames
from notifykit.testing import inbox

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

PREFIX = "nk-history"
NAMES = ChannelNames(PREFIX)
SLOW_RECONNECT: dict[str, Any] = {**FAST_RECOVERY, "backoff_initial": 1.0, "backoff_max": 1.0}
"""A subscriber that stays away between 0.5 and 1 s after losing its connection, long enough
for another instance to publish meanwhile."""


@asynccontextmanager
async def running(
    url: str, recorder: Recorder | None = None, *, cluster: bool = False, **options: Any
) -> AsyncIterator[RedisPropagator | RedisClusterPropagator]:
    kind = RedisClusterPropagator if cluster else RedisPropagator
    propagator = kind(url, prefix=PREFIX, **options)
    await propagator.start(recorder if recorder is not None else Recorder())
    try:
        yield propagator
    finally:
        await propagator.aclose()


def kill_subscriber(node: RedisServer, client_name: str) -> None:
    """``CLIENT KILL`` the subscriber connection named ``<client_name>-sub`` on ``node``."""
    [client] = node.pubsub_clients(f"{client_name}-sub")
    node.command("CLIENT", "KILL", "ID", client["id"])


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server with an append-only file fsynced at every write."""
    server = RedisServer(tmp_path / "redis-aof", persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- where history lives --------------------------------------------------------------------


async def test_a_notification_is_an_entry_of_its_stream_beside_its_channel(
    redis_server: RedisServer,
) -> None:
    recorder = Recorder()
    async with running(redis_server.url, recorder, history_ttl=60) as propagator:
        await propagator.subscribe(["u:1"])
        await propagator.publish(["u:1"], b"\n{}")
        await recorder.wait_for("u:1", b"\n{}")
        meta = redis_server.command("HGETALL", "nk-history:{u:1}:meta")
        epoch = meta[b"epoch"]
        assert meta == {b"epoch": epoch, b"last": b"1"}
        assert len(epoch) == 8
        assert int(epoch, 16) >= 0
        [(entry_id, fields)] = redis_server.command("XRANGE", "nk-history:{u:1}:history", "-", "+")
        offset, _, millis = entry_id.partition(b"-")
        assert (offset, fields) == (b"1", {b"p": b"\n{}"})
        assert abs(int(millis) - int(redis_server.command("TIME")[0]) * 1000) < 60_000
        for name in ("nk-history:{u:1}:meta", "nk-history:{u:1}:history"):
            assert 55_000 < redis_server.command("PTTL", name) <= 60_000
        assert recorder.positions == [("u:1", recorder.positions[0][1])]
        position = recorder.positions[0][1]
        assert position is not None
        assert (position.epoch.encode(), position.offset) == (epoch, 1)


async def test_a_read_of_a_connections_three_streams_is_one_round_trip(
    redis_server: RedisServer,
) -> None:
    async with running(redis_server.url) as propagator:
        await propagator.publish(["u:7", "auth", "all"], b"\n{}")
        before = propagator.statistics()
        found = await propagator.read({"u:7": 0, "auth": None, "all": 0}, 100)
        after = propagator.statistics()
        assert (after["publish_batches"], after["published"]) == (
            before["publish_batches"] + 1,
            before["published"] + 3,
        )
        assert [(s.last, len(s.entries)) for s in found.values()] == [(1, 1), (1, 0), (1, 1)]


async def test_history_size_bounds_the_entries_kept(redis_server: RedisServer) -> None:
    async with running(redis_server.url, history_size=3) as propagator:
        for index in range(10):
            await propagator.publish(["t:small"], b"\n%d" % index)
        assert redis_server.command("XLEN", "nk-history:{t:small}:history") == 3
        stream = (await propagator.read({"t:small": 0}, 100))["t:small"]
        assert (stream.first, stream.last) == (8, 10)
        assert [offset for offset, _ in stream.entries] == [8, 9, 10]


async def test_entries_older_than_the_ttl_are_no_longer_retained(
    redis_server: RedisServer,
) -> None:
    async with running(redis_server.url, history_ttl=1.0) as propagator:
        await propagator.publish(["t:aging"], b"\nold")
        first = (await propagator.read({"t:aging": 0}, 10))["t:aging"]
        assert (first.first, first.last, len(first.entries)) == (1, 1, 1)
        seen = [first]

        async def read() -> bool:
            seen.append((await propagator.read({"t:aging": 0}, 10))["t:aging"])
            return seen[-1].first == 2

        with anyio.fail_after(10):
            while not await read():  # noqa: ASYNC110 - each read keeps the stream alive
                await anyio.sleep(0.1)
        assert {(s.epoch, s.last) for s in seen} == {(first.epoch, 1)}
        assert seen[-1].entries == ()
        assert redis_server.command("XLEN", "nk-history:{t:aging}:history") == 0


async def test_an_idle_stream_expires_with_its_epoch(redis_server: RedisServer) -> None:
    async with running(redis_server.url, history_ttl=0.3) as propagator:
        await propagator.publish(["t:idle"], b"\n{}")
        before = (await propagator.read({"t:idle": None}, 0))["t:idle"]
        await eventually(lambda: not redis_server.command("EXISTS", "nk-history:{t:idle}:meta"))
        assert not redis_server.command("EXISTS", "nk-history:{t:idle}:history")
        after = (await propagator.read({"t:idle": 0}, 10))["t:idle"]
        assert after.epoch != before.epoch
        assert (after.last, after.first, after.entries) == (0, 1, ())


async def test_without_history_a_publish_is_a_plain_publish_and_keeps_nothing(
    redis_server: RedisServer,
) -> None:
    recorder = Recorder()
    async with running(redis_server.url, recorder, history_size=0) as propagator:
        await propagator.subscribe(["u:1"])
        await propagator.publish(["u:1"], b"\n{}")
        await recorder.wait_for("u:1", b"\n{}")
        assert recorder.positions == [("u:1", None)]
        assert redis_server.command("DBSIZE") == 0
        assert await propagator.read({"u:1": 0}, 10) == {}
        await propagator.barrier(["u:1"])


def test_history_settings_are_checked() -> None:
    for options in ({"history_size": -1}, {"history_ttl": 0}, {"history_size": 1.5}):
        with pytest.raises(ConfigurationError, match="history"):
            RedisPropagator("redis://127.0.0.1:1/0", **options)
        with pytest.raises(ConfigurationError, match="history"):
            RedisClusterPropagator("redis://127.0.0.1:1/0", **options)


async def test_serve_passes_its_history_settings_to_the_redis_propagator(
    redis_server: RedisServer,
) -> None:
    args = build_parser().parse_args(
        [
            "serve",
            *("--redis-url", redis_server.url, "--redis-prefix", PREFIX),
            *("--history-size", "2", "--history-ttl", "60"),
        ]
    )
    backends = build_backends(read_settings(args, {}))
    assert "history: 2 per stream, 60 s" in backends.description
    assert isinstance(backends.propagator, RedisPropagator)
    propagator = backends.propagator
    await propagator.start(Recorder())
    try:
        for index in range(5):
            await propagator.publish(["t:cli"], b"\n%d" % index)
        stream = (await propagator.read({"t:cli": 0}, 10))["t:cli"]
        assert [offset for offset, _ in stream.entries] == [4, 5]
        assert 55_000 < redis_server.command("PTTL", "nk-history:{t:cli}:meta") <= 60_000
    finally:
        await propagator.aclose()
        if backends.presence is not None:
            await backends.presence.aclose()


# --- the scripts ------------------------------------------------------------------------------


async def test_a_flushed_script_cache_is_loaded_again(redis_server: RedisServer) -> None:
    recorder = Recorder()
    async with running(redis_server.url, recorder) as propagator:
        await propagator.subscribe(["u:1"])
        await propagator.publish(["u:1"], b"\nbefore")
        redis_server.command("SCRIPT", "FLUSH")
        await propagator.publish(["u:1"], b"\nafter")
        await recorder.wait_for("u:1", b"\nafter")
        assert recorder.payloads("u:1") == [b"\nbefore", b"\nafter"]
        assert propagator.statistics()["scripts_reloaded"] == 1
        redis_server.command("SCRIPT", "FLUSH")
        assert (await propagator.read({"u:1": 0}, 10))["u:1"].last == 2


# --- the barrier -----------------------------------------------------------------------------


def calls(node: RedisServer, command: str) -> int:
    stats = node.command("INFO", "commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_concurrent_connects_read_each_shared_stream_once(
    redis_server: RedisServer,
) -> None:
    async with running(redis_server.url) as propagator:
        await propagator.publish(["auth", "all"], b"\n{}")
        before = calls(redis_server, "evalsha")
        found = await asyncio.gather(
            *(propagator.read({f"u:{n}": None, "auth": None, "all": None}, 100) for n in range(20))
        )
        # 20 user streams and one read each of "auth" and "all", not 20.
        assert calls(redis_server, "evalsha") - before == 22
        assert all(list(streams) == [f"u:{n}", "auth", "all"] for n, streams in enumerate(found))
        assert {(streams["all"].last, streams["all"].entries) for streams in found} == {(1, ())}


async def test_a_read_that_resumes_is_not_shared(redis_server: RedisServer) -> None:
    async with running(redis_server.url) as propagator:
        await propagator.publish(["all"], b"\n{}")
        before = calls(redis_server, "evalsha")
        found = await asyncio.gather(*(propagator.read({"all": 0}, 100) for _ in range(5)))
        assert calls(redis_server, "evalsha") - before == 5
        assert [len(streams["all"].entries) for streams in found] == [1] * 5


async def test_a_stream_redis_refuses_fails_only_the_connects_that_asked_for_it(
    redis_server: RedisServer,
) -> None:
    redis_server.command(
        "ACL", "SETUSER", "limited", "on", ">secret", "+@all", "&*",
        "~nk-history:{u:1}:*", "~nk-history:{all}:*",
    )  # fmt: skip
    url = redis_server.url.replace("redis://", "redis://limited:secret@")
    async with running(url) as propagator:
        allowed, refused = await asyncio.gather(
            propagator.read({"u:1": None, "all": None}, 0),
            propagator.read({"u:2": None, "all": None}, 0),
            return_exceptions=True,
        )
        assert isinstance(allowed, dict)
        assert list(allowed) == ["u:1", "all"]
        assert isinstance(refused, PropagationError)
        assert "u:2" in str(refused)


async def test_a_cancelled_connect_does_not_cancel_the_read_it_shares(
    redis_server: RedisServer,
) -> None:
    async with running(redis_server.url) as propagator:
        first = asyncio.ensure_future(propagator.read({"u:1": None, "all": None}, 0))
        second = asyncio.ensure_future(propagator.read({"u:2": None, "all": None}, 0))
        await asyncio.sleep(0)
        first.cancel()
        assert list(await second) == ["u:2", "all"]
        with pytest.raises(asyncio.CancelledError):
            await first


async def test_closing_during_a_shared_read_fails_its_connects_and_leaves_no_task(
    redis_server: RedisServer,
) -> None:
    propagator = RedisPropagator(redis_server.url, prefix=PREFIX)
    await propagator.start(Recorder())
    await propagator.read({"all": None}, 0)  # connected, the scripts loaded
    tasks_before = len(asyncio.all_tasks())
    redis_server.pause()  # the shared read is written and never answered
    try:
        reads = [asyncio.ensure_future(propagator.read({f"u:{n}": None, "all": None}, 0))
                 for n in range(5)]  # fmt: skip
        await asyncio.sleep(0.1)
        with anyio.fail_after(10):
            await propagator.aclose()
            results = await asyncio.gather(*reads, return_exceptions=True)
    finally:
        redis_server.resume()
    assert all(isinstance(result, PropagationError) and "closing" in str(result)
               for result in results), results  # fmt: skip
    assert len(asyncio.all_tasks()) < tasks_before  # the propagator's own tasks ended too


async def test_concurrent_barriers_share_one_ping(redis_server: RedisServer) -> None:
    async with running(redis_server.url) as propagator:
        await propagator.subscribe(["u:1", "auth", "all"])
        await propagator.barrier(["u:1"])
        before = calls(redis_server, "ping")
        await asyncio.gather(*(propagator.barrier(["u:1", "auth"]) for _ in range(50)))
        # One PING for the 50 (and at most one of the watchdog's meanwhile).
        assert 1 <= calls(redis_server, "ping") - before <= 2


async def test_a_barrier_is_bounded_while_redis_does_not_answer(
    redis_server: RedisServer,
) -> None:
    async with running(redis_server.url, **FAST_RECOVERY) as propagator:
        await propagator.subscribe(["u:1"])
        redis_server.pause()
        try:
            with anyio.fail_after(5), pytest.raises(PropagationError, match="barrier"):
                await propagator.barrier(["u:1"])
        finally:
            redis_server.resume()


# --- a subscriber cut off ----------------------------------------------------------------------


async def test_what_was_published_while_a_subscriber_was_cut_off_arrives_in_order_once(
    redis_server: RedisServer,
) -> None:
    recorder = Recorder()
    url = redis_server.url
    talked, quiet = "u:talked", "u:quiet"  # one had a message before the cut, one had none
    async with (
        running(url, recorder, client_name="cut", **SLOW_RECONNECT) as cut,
        running(url, **FAST_RECOVERY) as publisher,
    ):
        await cut.subscribe([talked, quiet])
        await publisher.publish([talked], b"\nbefore")
        await recorder.wait_for(talked, b"\nbefore")
        await cut.barrier([talked, quiet])  # both positions are known

        kill_subscriber(redis_server, "cut")
        await eventually(lambda: not cut.healthy)
        sent = [b"\n%d" % index for index in range(20)]
        for payload in sent:
            await publisher.publish([talked, quiet], payload)
        # Caught up by itself once resubscribed, with nothing more published:
        await recorder.wait_for(talked, sent[-1])
        await recorder.wait_for(quiet, sent[-1])
        await publisher.publish([talked, quiet], b"\nlive")
        await recorder.wait_for(talked, b"\nlive")
        await recorder.wait_for(quiet, b"\nlive")
        await cut.barrier([talked, quiet])

        assert recorder.payloads(talked) == [b"\nbefore", *sent, b"\nlive"]
        assert recorder.payloads(quiet) == [*sent, b"\nlive"]
        offsets = [p.offset for k, p in recorder.positions if k == talked and p is not None]
        assert offsets == list(range(1, 23))
        stats = cut.statistics()
        assert stats["reconnects"] == 1
        assert stats["history_repaired"] >= 40  # all published while it was away
        assert stats["history_gaps_lost"] == 0


async def test_on_a_cluster_what_was_published_while_a_subscriber_was_cut_off_arrives(
    redis_cluster: RedisClusterServers,
) -> None:
    recorder = Recorder()
    key = "u:cluster-cut"
    node = redis_cluster.owner_of(key_slot(NAMES.channel(key)))
    async with (
        running(
            redis_cluster.url, recorder, cluster=True, client_name="ccut", **SLOW_RECONNECT
        ) as cut,
        running(redis_cluster.url, cluster=True, **FAST_RECOVERY) as publisher,
    ):
        await cut.subscribe([key])
        await publisher.publish([key], b"\nbefore")
        await recorder.wait_for(key, b"\nbefore")
        kill_subscriber(node, "ccut")
        await eventually(lambda: not cut.healthy)
        sent = [b"\n%d" % index for index in range(10)]
        for payload in sent:
            await publisher.publish([key], payload)
        await recorder.wait_for(key, sent[-1])
        await cut.barrier([key])
        assert recorder.payloads(key) == [b"\nbefore", *sent]
        assert cut.statistics()["history_repaired"] >= 10


async def test_keys_with_braces_keep_their_three_names_in_one_cluster_slot(
    redis_cluster: RedisClusterServers,
) -> None:
    keys = ["u:a}b", "u:{x}", "u:}", "u:{", "u:{}{", "t:x{y}"]
    names = ChannelNames(PREFIX, cluster=True)
    for key in keys:
        slots = {key_slot(names.channel(key)), key_slot(names.stream(key))}
        slots.add(key_slot(names.meta(key)))
        assert len(slots) == 1, key
    recorder = Recorder()
    async with running(redis_cluster.url, recorder, cluster=True) as propagator:
        await propagator.subscribe(keys)
        await propagator.publish(keys, b"\nbraces")
        found = await propagator.read(dict.fromkeys(keys, 0), 10)
        for key in keys:
            await recorder.wait_for(key, b"\nbraces")
            assert [offset for offset, _ in found[key].entries] == [1]


# --- Redis restarted ---------------------------------------------------------------------------


async def test_a_redis_restarted_without_persistence_means_a_new_epoch_and_no_recovery(
    redis_server: RedisServer,
) -> None:
    async with Hub(RedisPropagator(redis_server.url, prefix=PREFIX, **FAST_RECOVERY)) as hub:
        gateway = Gateway(hub, TokenIsUser())
        book = Book()
        async with connect(gateway, "42") as client:
            book.welcomed(await welcome(client))
            await hub.notify_user("42", "before")
            book.took((await notifications(client, 1))[0])
        redis_server.kill()
        redis_server.restart()
        await eventually(lambda: hub.propagator.healthy)
        while True:  # the publisher's connection may still be coming back
            try:
                await hub.notify_user("42", "after the restart")
                break
            except PropagationError:
                await anyio.sleep(0.05)
        async with connect(gateway, "42", book.positions) as client:
            greeting = await welcome(client)
            assert greeting.recovered is False
            assert greeting.positions["u:42"].epoch != book.positions["u:42"].epoch
            assert greeting.positions["u:42"].offset == 1
            live = await hub.notify_user("42", "live")
            [note] = await notifications(client, 1)  # nothing replayed before it
            assert (note.id, note.offset) == (live, 2)


async def test_a_redis_restarted_with_persistence_keeps_the_epoch_and_loses_nothing(
    persistent_redis: RedisServer,
) -> None:
    propagator = RedisPropagator(persistent_redis.url, prefix=PREFIX, **FAST_RECOVERY)
    async with Hub(propagator) as hub:
        gateway = Gateway(hub, TokenIsUser())
        book = Book()
        async with connect(gateway, "42") as client:
            book.welcomed(await welcome(client))
            await hub.notify_user("42", "seen")
            book.took((await notifications(client, 1))[0])
        missed = [await hub.notify_user("42", "missed before", n) for n in range(3)]
        persistent_redis.kill()  # SIGKILL: only the append-only file remains
        persistent_redis.restart()
        await eventually(lambda: hub.propagator.healthy)
        while True:
            try:
                missed.append(await hub.notify_user("42", "missed after"))
                break
            except PropagationError:
                await anyio.sleep(0.05)
        async with connect(gateway, "42", book.positions) as client:
            greeting = await welcome(client)
            assert greeting.recovered is True
            book.welcomed(greeting)
            replayed = await notifications(client, 4)
            for note in replayed:
                book.took(note)
            assert [note.id for note in replayed] == missed
            assert [note.offset for note in replayed] == [2, 3, 4, 5]


async def test_connected_clients_get_what_was_published_while_their_instance_resubscribed(
    persistent_redis: RedisServer,
) -> None:
    # The instance holding the client comes back slowly after a Redis restart; another one
    # publishes meanwhile. The client, still connected, must get everything, in order, once.
    url = persistent_redis.url
    slow = RedisPropagator(url, prefix=PREFIX, **SLOW_RECONNECT)
    async with (
        Hub(slow) as serving,
        Hub(RedisPropagator(url, prefix=PREFIX, **FAST_RECOVERY)) as publishing,
        inbox(serving, "42") as box,
    ):
        first = await publishing.notify_user("42", "before")
        assert (await box.next(timeout=5)).id == first
        persistent_redis.kill()
        persistent_redis.restart()
        sent = [first]
        with anyio.fail_after(15):
            while len(sent) < 11:
                try:
                    sent.append(await publishing.notify_user("42", "meanwhile", len(sent)))
                except PropagationError:
                    await anyio.sleep(0.05)
        got = [await box.next(timeout=10) for _ in range(10)]
        assert [first] + [note.id for note in got] == sent
        assert [note.offset for note in got] == list(range(2, 12))
        await box.assert_nothing()
        assert serving.propagator.statistics()["history_repaired"] >= 1
