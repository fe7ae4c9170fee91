"""RedisPropagator against real redis-server processes: routing, batching, and outages.

The contract every propagator keeps is in test_conformance_redis.py; this file covers what is
particular to Redis: per-key channels, coalesced round trips, and staying up through restarts,
killed connections and a server that stops answering.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from redis.exceptions import MovedError, ResponseError
from servers import FAST_RECOVERY, Recorder, RedisServer, eventually

from notifykit import errors
from notifykit.errors import ConfigurationError, PropagationError
from notifykit.hub import Hub
from notifykit.redis import RedisPropagator, propagator_from_url
from notifykit.redis._subscriptions import (
    Confirmed,
    Desync,
    Lost,
    Pong,
    Refused,
    Subscriptions,
    Unexpected,
)
from notifykit.testing import inbox

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@asynccontextmanager
async def running(
    url: str, recorder: Recorder | None = None, **options: Any
) -> AsyncIterator[RedisPropagator]:
    propagator = RedisPropagator(url, prefix=options.pop("prefix", "nk-test"), **options)
    await propagator.start(recorder if recorder is not None else Recorder())
    try:
        yield propagator
    finally:
        await propagator.aclose()


async def publish_until_received(
    publisher: RedisPropagator, recorder: Recorder, key: str, payload: bytes
) -> None:
    """Publish ``payload`` and wait for it to arrive (Redis may still be coming back: retry)."""
    with anyio.fail_after(15):
        while payload not in recorder.payloads(key):
            try:
                await publisher.publish([key], payload)
                await recorder.wait_for(key, payload, within=0.5)
            except (PropagationError, TimeoutError):
                await anyio.sleep(0.05)


def other_tasks() -> int:
    return len(asyncio.all_tasks()) - 1


# --- routing ------------------------------------------------------------------------------


async def test_a_payload_is_received_only_by_instances_subscribed_to_its_key(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    a, b, both = Recorder(), Recorder(), Recorder()
    async with (
        running(url, a) as instance_a,
        running(url, b) as instance_b,
        running(url, both) as instance_both,
        running(url) as publisher,
    ):
        await instance_a.subscribe(["u:alice"])
        await instance_b.subscribe(["u:bob"])
        await instance_both.subscribe(["u:alice", "u:bob"])
        for index in range(10):
            await publisher.publish(["u:alice"], b"alice %d" % index)
        for index in range(5):
            await publisher.publish(["u:bob"], b"bob %d" % index)
        await a.wait_for("u:alice", b"alice 9")
        await b.wait_for("u:bob", b"bob 4")
        await both.wait_for("u:alice", b"alice 9")
        await both.wait_for("u:bob", b"bob 4")
        await anyio.sleep(0.1)

        # Counted at the Redis connection, not after filtering: nothing else came in.
        assert instance_a.statistics()["received"] == 10
        assert instance_b.statistics()["received"] == 5
        assert instance_both.statistics()["received"] == 15
        assert publisher.statistics()["received"] == 0
        numsub = redis_server.command("PUBSUB", "NUMSUB", "nk-test:u:alice", "nk-test:u:bob")
        assert numsub == [b"nk-test:u:alice", 2, b"nk-test:u:bob", 2]


async def test_hubs_sharing_one_redis_deliver_a_user_notification_only_where_the_user_is(
    redis_server: RedisServer,
) -> None:
    def hub() -> Hub:
        return Hub(RedisPropagator(redis_server.url, prefix="nk-hub"))

    async with (
        hub() as hub_1,
        hub() as hub_2,
        hub() as hub_3,
        inbox(hub_1, user="alice") as alice_on_1,
        inbox(hub_3, user="alice") as alice_on_3,
        inbox(hub_2, user="bob") as bob_on_2,
    ):
        await hub_2.notify_user("alice", "order.shipped", {"order": 7})
        assert (await alice_on_1.next(timeout=5)).data == {"order": 7}
        assert (await alice_on_3.next(timeout=5)).data == {"order": 7}
        await hub_1.broadcast("maintenance")
        assert (await bob_on_2.next(timeout=5)).event == "maintenance"
        # hub_2 holds no connection of alice: the notification never reached it.
        assert hub_2.propagator.statistics()["received"] == 1  # the broadcast only
        await bob_on_2.assert_nothing()


async def test_channels_are_prefix_colon_key_so_apps_with_other_prefixes_do_not_mix(
    redis_server: RedisServer,
) -> None:
    shop, blog = Recorder(), Recorder()
    url = redis_server.url
    async with running(url, shop, prefix="shop") as a, running(url, blog, prefix="blog") as b:
        await a.subscribe(["u:1"])
        await b.subscribe(["u:1"])
        assert sorted(redis_server.command("PUBSUB", "CHANNELS", "*:u:1")) == [
            b"blog:u:1",
            b"shop:u:1",
        ]
        await a.publish(["u:1"], b"for the shop")
        await b.publish(["u:1"], b"for the blog")
        await shop.wait_for("u:1", b"for the shop")
        await blog.wait_for("u:1", b"for the blog")
        await anyio.sleep(0.1)
        assert shop.log == [("u:1", b"for the shop")]
        assert blog.log == [("u:1", b"for the blog")]


# --- batching -----------------------------------------------------------------------------


async def test_a_storm_of_concurrent_subscribes_is_coalesced_into_few_round_trips(
    redis_server: RedisServer,
) -> None:
    recorder = Recorder()
    async with running(redis_server.url, recorder) as propagator, running(redis_server.url) as pub:
        before = propagator.statistics()["subscribe_batches"]
        async with anyio.create_task_group() as tasks:
            for index in range(500):
                tasks.start_soon(propagator.subscribe, [f"u:{index}", "auth", "all"])
        batches = propagator.statistics()["subscribe_batches"] - before

        assert batches <= 3, f"500 subscribe() calls took {batches} round trips"
        assert len(redis_server.command("PUBSUB", "CHANNELS", "nk-test:*")) == 502
        await pub.publish(["u:499", "all"], b"after the storm")
        await recorder.wait_for("u:499", b"after the storm")
        await recorder.wait_for("all", b"after the storm")


async def test_a_publish_to_many_keys_is_one_pipeline(redis_server: RedisServer) -> None:
    recorder = Recorder()
    keys = [f"u:{index}" for index in range(1000)]
    async with running(redis_server.url, recorder) as subscriber, running(redis_server.url) as pub:
        await subscriber.subscribe(keys)
        before = pub.statistics()
        await pub.publish(keys, b"to everyone of them")
        after = pub.statistics()

        assert after["publish_batches"] - before["publish_batches"] == 1
        assert after["published"] - before["published"] == 1000
        await recorder.wait_for("u:999", b"to everyone of them")
        await eventually(lambda: len(recorder.log) == 1000)


async def test_concurrent_publishes_are_coalesced_into_pipelines_and_keep_per_key_order(
    redis_server: RedisServer,
) -> None:
    recorder = Recorder()
    async with running(redis_server.url, recorder) as subscriber, running(redis_server.url) as pub:
        keys = [f"u:{index}" for index in range(100)]
        await subscriber.subscribe(keys)

        async def publish_five(key: str) -> None:
            for index in range(5):
                await pub.publish([key], b"%d" % index)

        async with anyio.create_task_group() as tasks:
            for key in keys:
                tasks.start_soon(publish_five, key)

        stats = pub.statistics()
        assert stats["published"] == 500
        assert stats["publish_batches"] <= 50, f"{stats['publish_batches']} pipelines for 500"
        await eventually(lambda: len(recorder.log) == 500)
        for key in keys:
            assert recorder.payloads(key) == [b"0", b"1", b"2", b"3", b"4"]


async def test_the_publish_queue_is_bounded_and_callers_beyond_it_wait_for_room(
    redis_server: RedisServer,
) -> None:
    recorder = Recorder()
    url = redis_server.url
    async with running(url, recorder) as subscriber, running(url, max_pending_publishes=2) as pub:
        await subscriber.subscribe(["u:1"])
        async with anyio.create_task_group() as tasks:
            for index in range(50):
                tasks.start_soon(pub.publish, ["u:1"], b"%d" % index)

        assert pub.statistics()["publish_batches"] >= 25  # never more than 2 calls queued
        await eventually(lambda: len(recorder.log) == 50)


# --- errors -------------------------------------------------------------------------------


async def test_publish_raises_propagation_error_naming_the_server_when_redis_is_gone(
    redis_server: RedisServer,
) -> None:
    async with running(redis_server.url, **FAST_RECOVERY) as propagator:
        await propagator.publish(["u:1"], b"fine")
        redis_server.stop()
        with pytest.raises(PropagationError, match=redis_server.address) as caught:
            await propagator.publish(["u:1"], b"lost")
        assert isinstance(caught.value, errors.NotifyKitError)
        assert propagator.statistics()["publish_errors"] == 1


async def test_wrong_password_is_reported_not_raised_at_start(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", password="s3cret")
    server.start()
    try:
        wrong = f"redis://:nope@127.0.0.1:{server.port}/0"
        async with running(wrong, **FAST_RECOVERY) as propagator:
            assert propagator.healthy is False
            with pytest.raises(PropagationError) as caught:
                await propagator.publish(["u:1"], b"x")
            assert "nope" not in str(caught.value)
    finally:
        server.stop()


async def test_password_and_database_are_taken_from_the_url(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", password="s3cret")
    server.start()
    try:
        recorder = Recorder()
        url = f"redis://:s3cret@127.0.0.1:{server.port}/3"
        async with running(url, recorder) as subscriber, running(url) as publisher:
            assert subscriber.healthy
            await subscriber.subscribe(["u:1"])
            await publisher.publish(["u:1"], b"authenticated")
            await recorder.wait_for("u:1", b"authenticated")
            clients = server.pubsub_clients("notifykit-sub")
            assert [client["db"] for client in clients] == ["3"]
    finally:
        server.stop()


async def test_rediss_urls_connect_over_tls(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", tls=True)
    server.start()
    try:
        recorder = Recorder()
        async with running(server.url, recorder) as subscriber, running(server.url) as publisher:
            assert server.url.startswith("rediss://")
            await subscriber.subscribe(["u:1"])
            await publisher.publish(["u:1"], b"encrypted")
            await recorder.wait_for("u:1", b"encrypted")
            assert len(server.pubsub_clients("notifykit-sub")) == 1
    finally:
        server.stop()


async def test_bad_settings_raise_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="URL"):
        RedisPropagator("http://127.0.0.1:6379")
    with pytest.raises(ConfigurationError, match="prefix"):
        RedisPropagator(prefix="")
    with pytest.raises(ConfigurationError, match="connect_timeout"):
        RedisPropagator(connect_timeout=0)
    with pytest.raises(ConfigurationError, match="max_pending_publishes"):
        propagator_from_url("redis://127.0.0.1", max_pending_publishes=0)


async def test_a_raising_deliver_is_logged_and_counted(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    def deliver(key: str, payload: bytes) -> None:
        raise ValueError("a bug in deliver")

    broken = RedisPropagator(redis_server.url, prefix="nk-test")
    await broken.start(deliver)
    try:
        async with running(redis_server.url) as publisher:
            await broken.subscribe(["u:1"])
            await publisher.publish(["u:1"], b"boom")
            await publisher.publish(["u:1"], b"boom again")
            await eventually(lambda: broken.statistics()["deliver_errors"] == 2)
            assert broken.healthy
            assert broken.statistics()["received"] == 2
    finally:
        await broken.aclose()
    messages = [r.getMessage() for r in caplog.records if r.name == "notifykit.redis"]
    assert messages.count("deliver raised for key 'u:1'; payload skipped") == 2


# --- outages ------------------------------------------------------------------------------


async def test_start_succeeds_while_redis_is_down_and_subscribe_waits_for_it(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis")  # its port is chosen, nothing listens yet
    recorder = Recorder()
    try:
        async with running(server.url, recorder, **FAST_RECOVERY) as propagator:
            assert propagator.healthy is False
            with pytest.raises(PropagationError):
                await propagator.publish(["u:1"], b"nobody there")

            subscribed = anyio.Event()

            async def subscribe() -> None:
                await propagator.subscribe(["u:1"])
                subscribed.set()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(subscribe)
                with anyio.move_on_after(0.3):
                    await subscribed.wait()
                assert not subscribed.is_set(), "subscribe() returned with Redis down"
                server.start()
                with anyio.fail_after(10):
                    await subscribed.wait()
            assert propagator.healthy
            assert propagator.statistics()["connect_failures"] >= 1
            await propagator.publish(["u:1"], b"now it works")
            await recorder.wait_for("u:1", b"now it works")
    finally:
        server.stop()


async def test_a_restarted_redis_is_reconnected_and_resubscribed_without_leaking_tasks(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="notifykit.redis")
    recorder = Recorder()
    keys = ["u:1", "t:news", "all"]
    async with (
        running(redis_server.url, recorder, **FAST_RECOVERY) as subscriber,
        running(redis_server.url, **FAST_RECOVERY) as publisher,
    ):
        await subscriber.subscribe(keys)
        tasks_before = other_tasks()

        redis_server.kill()
        await eventually(lambda: not subscriber.healthy)
        with pytest.raises(PropagationError):
            await publisher.publish(["u:1"], b"while down")
        redis_server.restart()
        await eventually(lambda: subscriber.healthy and publisher.healthy)

        for key in keys:
            await publish_until_received(publisher, recorder, key, b"after the restart")
        stats = subscriber.statistics()
        assert stats["reconnects"] == 1
        assert stats["resubscribed_channels"] == 3
        assert other_tasks() == tasks_before
    messages = [r.getMessage() for r in caplog.records if r.name == "notifykit.redis"]
    assert any(m.startswith("lost the subscriber connection to Redis at") for m in messages)
    assert any(m.endswith("resubscribing 3 channel(s)") for m in messages)


async def test_a_killed_subscriber_connection_is_replaced_and_resubscribed(
    redis_server: RedisServer,
) -> None:
    recorder = Recorder()
    async with (
        running(redis_server.url, recorder, **FAST_RECOVERY) as subscriber,
        running(redis_server.url, **FAST_RECOVERY) as publisher,
    ):
        await subscriber.subscribe(["u:1", "u:2"])
        assert redis_server.command("CLIENT", "KILL", "TYPE", "pubsub") == 1

        await eventually(lambda: subscriber.statistics()["reconnects"] == 1)
        await publish_until_received(publisher, recorder, "u:2", b"after CLIENT KILL")
        assert subscriber.healthy
        assert subscriber.statistics()["resubscribed_channels"] == 2
        assert len(redis_server.pubsub_clients("notifykit-sub")) == 1


async def test_a_publish_this_instance_would_miss_is_refused_until_its_subscriber_is_back(
    redis_server: RedisServer,
) -> None:
    recorder = Recorder()
    options = dict(FAST_RECOVERY, command_timeout=2.0)
    async with running(redis_server.url, recorder, **options) as propagator:
        await propagator.subscribe(["u:1"])
        await propagator.publish(["u:1"], b"before")
        await recorder.wait_for("u:1", b"before")

        # Redis answers (the publisher's connection works) but the subscriber cannot get back:
        # the last client slot is taken.
        holder = redis.Redis(host="127.0.0.1", port=redis_server.port, protocol=2)
        try:
            holder.config_set("maxclients", 2)
            assert holder.client_kill_filter(_type="pubsub") == 1
            await eventually(lambda: propagator.statistics()["connect_failures"] >= 1)
            assert not propagator.healthy
            published = propagator.statistics()["published"]
            with pytest.raises(PropagationError, match="not subscribed there again"):
                await propagator.publish(["u:1"], b"would be missed")
            assert propagator.statistics()["published"] == published  # never sent
        finally:
            holder.close()

        # The slot is free: the next publish waits for the subscriber, then goes through.
        await propagator.publish(["u:1"], b"after")
        assert propagator.healthy
        await recorder.wait_for("u:1", b"after")
        assert recorder.payloads("u:1") == [b"before", b"after"]


async def test_a_server_that_stops_answering_is_noticed_by_the_watchdog(
    redis_server: RedisServer,
) -> None:
    recorder = Recorder()
    async with (
        running(redis_server.url, recorder, **FAST_RECOVERY) as subscriber,
        running(redis_server.url, **FAST_RECOVERY) as publisher,
    ):
        await subscriber.subscribe(["u:1"])
        redis_server.pause()  # the socket stays open; nothing answers
        try:
            await eventually(lambda: not subscriber.healthy)
            assert subscriber.statistics()["watchdog_repairs"] >= 1
        finally:
            redis_server.resume()
        await eventually(lambda: subscriber.healthy)
        await publish_until_received(publisher, recorder, "u:1", b"after the freeze")


async def test_an_idle_subscriber_ignores_socket_timeouts_and_resp3_from_the_url(
    redis_server: RedisServer,
) -> None:
    recorder = Recorder()
    url = redis_server.url + "?protocol=3&socket_timeout=0.05"
    async with running(url, recorder) as subscriber, running(url) as publisher:
        await subscriber.subscribe(["u:1"])
        await anyio.sleep(0.5)  # ten socket timeouts' worth of silence
        assert subscriber.healthy
        assert subscriber.statistics()["reconnects"] == 0
        await publisher.publish(["u:1"], b"still listening")
        await recorder.wait_for("u:1", b"still listening")


async def test_aclose_fails_waiting_subscribes_and_releases_connections_and_tasks(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    baseline = other_tasks()
    async with running(redis_server.url) as propagator:
        await propagator.subscribe(["u:1"])
        await propagator.publish(["u:1"], b"x")
        assert len(redis_server.pubsub_clients("notifykit-sub")) == 1
    await eventually(lambda: not redis_server.pubsub_clients("notifykit-sub"))
    assert other_tasks() == baseline

    nowhere = RedisServer(tmp_path / "unstarted")
    propagator = RedisPropagator(nowhere.url, **FAST_RECOVERY)
    await propagator.start(Recorder())
    failures: list[PropagationError] = []

    async def subscribe() -> None:
        try:
            await propagator.subscribe(["u:1"])
        except PropagationError as exc:
            failures.append(exc)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(subscribe)
        await anyio.sleep(0.1)
        await propagator.aclose()
    await propagator.aclose()
    assert [str(exc) for exc in failures] == ["the propagator is closed"]
    assert other_tasks() == baseline


# --- the subscription bookkeeping, without a server -----------------------------------------


def bookkeeping(*, sharded: bool = False) -> Subscriptions:
    state = Subscriptions(sharded=sharded)
    state.begin()
    return state


def test_a_subscription_is_confirmed_by_the_reply_to_the_last_subscribe_only() -> None:
    state = bookkeeping()
    assert state.want(b"c") is False
    assert state.next_commands() == [b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\nc\r\n"]
    state.unwant(b"c")
    assert state.next_commands() == [b"*2\r\n$11\r\nUNSUBSCRIBE\r\n$1\r\nc\r\n"]
    state.want(b"c")
    assert len(state.next_commands()) == 1
    # The first confirmation is undone by the UNSUBSCRIBE after it: nothing to report.
    assert state.on_reply([b"subscribe", b"c", 1]) is None
    assert state.on_reply([b"unsubscribe", b"c", 0]) is None
    assert state.on_reply([b"subscribe", b"c", 1]) == Confirmed(b"c")
    state.unwant(b"c")
    assert state.want(b"c") is True  # still held by the server: nothing to send
    assert state.next_commands() == []


def test_many_wanted_channels_go_out_as_one_command_and_sharded_ones_one_per_slot() -> None:
    state = bookkeeping()
    for index in range(50):
        state.want(b"nk:u:%d" % index)
    assert len(state.next_commands()) == 1
    sharded = bookkeeping(sharded=True)
    for index in range(50):
        sharded.want(b"nk:u:%d" % index)
    commands = sharded.next_commands()
    assert len(commands) == 50
    assert all(command.startswith(b"*2\r\n$10\r\nSSUBSCRIBE\r\n") for command in commands)


def test_a_subscription_the_server_dropped_by_itself_is_reported_lost() -> None:
    state = bookkeeping(sharded=True)
    state.want(b"c")
    state.next_commands()
    assert state.on_reply([b"ssubscribe", b"c", 1]) == Confirmed(b"c")
    assert state.on_reply([b"sunsubscribe", b"c", 0]) == Lost([b"c"])  # the slot moved away


def test_a_refused_subscribe_reports_its_channels_and_a_moved_one_reports_them_lost() -> None:
    state = bookkeeping(sharded=True)
    state.want(b"a")
    state.next_commands()
    refusal = ResponseError("NOPERM this user has no permissions")
    assert state.on_error(refusal) == Refused([b"a"], refusal)
    state.want(b"b")
    state.next_commands()
    assert state.on_error(MovedError("3999 127.0.0.1:7001")) == Lost([b"b"])


def test_a_pong_answers_the_watchdog_and_an_unknown_reply_is_reported_unexpected() -> None:
    state = bookkeeping()
    state.request_ping()
    state.next_commands()
    assert state.on_reply(b"PONG") == Pong()
    assert state.on_reply([b"something", b"else"]) == Unexpected([b"something", b"else"])
    assert state.unexpected_replies == 1


def test_a_pong_outside_pubsub_mode_while_subscribed_means_the_subscriptions_are_gone() -> None:
    state = bookkeeping()
    state.want(b"c")
    state.next_commands()
    state.on_reply([b"subscribe", b"c", 1])
    state.request_ping()
    state.next_commands()
    with pytest.raises(Desync, match="lost its subscriptions"):
        state.on_reply(b"PONG")


def test_replies_that_match_no_command_mean_the_connection_cannot_be_trusted() -> None:
    state = bookkeeping()
    with pytest.raises(Desync, match="nobody asked for"):
        state.on_reply([b"subscribe", b"x", 1])
    with pytest.raises(Desync, match="out of turn"):
        state.on_error(ResponseError("ERR unknown"))
    state.want(b"c")
    state.next_commands()
    with pytest.raises(Desync, match="holds 2 subscriptions, 1 expected"):
        state.on_reply([b"subscribe", b"c", 2])


def test_after_a_reconnect_it_is_restored_only_once_every_earlier_channel_is_confirmed() -> None:
    state = bookkeeping()
    for count, channel in enumerate((b"a", b"b"), start=1):
        state.want(channel)
        state.next_commands()
        state.on_reply([b"subscribe", channel, count])
    assert state.restored

    state.begin()  # a new connection: both must be subscribed again, in one command
    assert not state.restored
    (command,) = state.next_commands()
    first, second = sorted((b"a", b"b"), key=lambda c: command.index(b"\r\n" + c + b"\r\n"))
    state.on_reply([b"subscribe", first, 1])
    assert not state.restored  # healthy still says False: the other could miss a message
    state.want(b"c")  # wanted since the reconnect: a new subscription, not part of the outage
    state.on_reply([b"subscribe", second, 2])
    assert state.restored


def test_a_channel_unwanted_during_the_restore_is_not_waited_for() -> None:
    state = bookkeeping()
    state.want(b"a")
    state.begin()
    state.unwant(b"a")
    assert state.restored
