"""``RedisSyncPublisher``: synchronous code (a Celery task, a management command) publishes with
no event loop and no hub, and a hub on the same Redis delivers it as its own.

The publisher runs in a worker thread, as it would in a sync Django view; the receiving hub and
its inboxes (notifykit.testing) run on the test's loop against a real redis-server (and a real
Redis Cluster).
"""

from __future__ import annotations

import threading

import anyio
import anyio.to_thread
import pytest
from servers import RedisClusterServers, RedisServer, free_port

from notifykit import ConfigurationError, Hub, InvalidNotification, PropagationError
from notifykit.redis import RedisClusterPropagator, RedisPropagator, RedisSyncPublisher
from notifykit.testing import inbox

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

PREFIX = "nk-sync"


async def test_each_kind_of_target_reaches_a_hub_on_the_same_redis(
    redis_server: RedisServer,
) -> None:
    publisher = RedisSyncPublisher(redis_server.url, prefix=PREFIX)
    async with (
        Hub(RedisPropagator(redis_server.url, prefix=PREFIX)) as hub,
        inbox(hub, "42", topics=["team:7"]) as alice,
        inbox(hub, "43") as bob,
        inbox(hub, None) as anonymous,
    ):
        sent = [
            await anyio.to_thread.run_sync(publisher.notify_user, "42", "one", {"n": 1}),
            await anyio.to_thread.run_sync(publisher.notify_users, ["42", "43"], "two"),
            await anyio.to_thread.run_sync(publisher.notify_topic, "team:7", "three"),
            await anyio.to_thread.run_sync(publisher.notify_authenticated, "four"),
            await anyio.to_thread.run_sync(publisher.broadcast, "five"),
        ]
        received = [await alice.next(timeout=5) for _ in range(5)]
        assert [n.id for n in received] == sent
        assert [n.event for n in received] == ["one", "two", "three", "four", "five"]
        assert received[0].data == {"n": 1}
        assert received[2].topic == "team:7"
        assert [(await bob.next(timeout=5)).event for _ in range(3)] == ["two", "four", "five"]
        assert (await anonymous.next(timeout=5)).event == "five"
        assert sent == sorted(sent)  # ids sort by time, as the hub's do
    publisher.close()


async def test_exclude_skips_that_connection(redis_server: RedisServer) -> None:
    async with (
        Hub(RedisPropagator(redis_server.url, prefix=PREFIX)) as hub,
        inbox(hub, "42") as tab1,
        inbox(hub, "42") as tab2,
    ):
        with RedisSyncPublisher(redis_server.url, prefix=PREFIX) as publisher:
            await anyio.to_thread.run_sync(
                lambda: publisher.notify_user("42", "edit", exclude=tab1.connection_id)
            )
            sentinel = await anyio.to_thread.run_sync(publisher.broadcast, "sentinel")
        assert (await tab2.next(timeout=5)).event == "edit"
        assert (await tab1.next(timeout=5)).id == sentinel  # the edit never came before it


async def test_a_cluster_publisher_reaches_a_cluster_hub(
    redis_cluster: RedisClusterServers,
) -> None:
    async with (
        Hub(RedisClusterPropagator(redis_cluster.url, prefix=PREFIX)) as hub,
        inbox(hub, "42", topics=["room:1"]) as box,
    ):
        publisher = RedisSyncPublisher(redis_cluster.url, prefix=PREFIX, cluster=True)
        try:
            first = await anyio.to_thread.run_sync(publisher.notify_user, "42", "one")
            second = await anyio.to_thread.run_sync(publisher.notify_topic, "room:1", "two")
        finally:
            publisher.close()
        assert [(await box.next(timeout=5)).id for _ in range(2)] == [first, second]


def test_ids_are_unique_and_increasing_per_thread_when_threads_share_a_publisher(
    redis_server: RedisServer,
) -> None:
    publisher = RedisSyncPublisher(redis_server.url, prefix=PREFIX)
    ids: dict[int, list[str]] = {}

    def work(n: int) -> None:
        ids[n] = [publisher.broadcast("tick") for _ in range(50)]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    publisher.close()
    every = [i for batch in ids.values() for i in batch]
    assert len(every) == len(set(every)) == 200
    for batch in ids.values():
        assert batch == sorted(batch)


def test_bad_notifications_are_refused_before_anything_is_sent(redis_server: RedisServer) -> None:
    with RedisSyncPublisher(redis_server.url, prefix=PREFIX) as publisher:
        with pytest.raises(InvalidNotification):
            publisher.notify_user("", "event")
        with pytest.raises(InvalidNotification):
            publisher.notify_topic("no spaces", "event")
        with pytest.raises(InvalidNotification):
            publisher.broadcast("event", {"not": {1, 2}})  # a set is not JSON
        with pytest.raises(InvalidNotification):
            publisher.notify_users("42", "event")  # a string, not a list


def test_an_unreachable_redis_raises_propagation_error_without_the_password() -> None:
    with (
        RedisSyncPublisher(
            f"redis://:s3cret@127.0.0.1:{free_port()}/0", prefix=PREFIX, timeout=1
        ) as publisher,
        pytest.raises(PropagationError) as caught,
    ):
        publisher.broadcast("event")
    assert "s3cret" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "options"),
    [
        pytest.param("http://127.0.0.1", {}, id="not-a-redis-url"),
        pytest.param("redis://127.0.0.1", {"prefix": "has space"}, id="bad-prefix"),
        pytest.param("redis://127.0.0.1", {"timeout": 0}, id="zero-timeout"),
    ],
)
def test_unusable_settings_are_refused_at_once(url: str, options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        RedisSyncPublisher(url, **options)  # type: ignore[arg-type]
