"""The hub: the notify_* API, routing, lifecycle, and how connections are registered.

Receivers are ``notifykit.testing.inbox`` connections, registered exactly as the gateway
registers websockets. With the in-memory propagator, delivery is complete when ``notify_*``
returns, so "nothing arrived" is checked right after a later sentinel notification.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from typing import Any

import anyio
import pytest

from notifykit import Hub, InvalidNotification, Principal, PropagationError
from notifykit.connection import Connection
from notifykit.memory import MemoryBus, MemoryPropagator
from notifykit.model import StreamHistory
from notifykit.protocols import Deliver, Propagator
from notifykit.testing import inbox

pytestmark = pytest.mark.anyio


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    async with Hub() as running:
        yield running


# --- the notify_* API -----------------------------------------------------------------------


async def test_notify_user_reaches_every_connection_of_that_user_and_no_one_else(
    hub: Hub,
) -> None:
    async with (
        inbox(hub, "42") as phone,
        inbox(hub, "42") as laptop,
        inbox(hub, "43") as other,
        inbox(hub, None) as anonymous,
    ):
        sent = await hub.notify_user("42", "order.shipped", {"order": 7})
        for box in (phone, laptop):
            note = await box.next()
            assert (note.id, note.event, note.data, note.topic) == (
                sent,
                "order.shipped",
                {"order": 7},
                None,
            )
        await other.assert_nothing()
        await anonymous.assert_nothing()


async def test_notify_users_reaches_each_user_once_under_one_id(hub: Hub) -> None:
    async with inbox(hub, "1") as one, inbox(hub, "2") as two, inbox(hub, "3") as three:
        sent = await hub.notify_users(["1", "2", "1"], "team.invite")
        assert [n.id for n in one.notifications] == [sent]
        assert [n.id for n in two.notifications] == [sent]
        await three.assert_nothing()


async def test_notify_topic_reaches_exactly_its_subscribers(hub: Hub) -> None:
    async with (
        inbox(hub, "1", topics=["doc:7"]) as subscriber,
        inbox(hub, "2", topics=["doc:8"]) as elsewhere,
        inbox(hub, "3") as unsubscribed,
    ):
        sent = await hub.notify_topic("doc:7", "doc.edited", {"rev": 2})
        note = await subscriber.next()
        assert (note.id, note.topic, note.data) == (sent, "doc:7", {"rev": 2})
        await elsewhere.assert_nothing()
        await unsubscribed.assert_nothing()


async def test_notify_authenticated_reaches_every_user_but_not_anonymous_connections(
    hub: Hub,
) -> None:
    async with inbox(hub, "1") as one, inbox(hub, "2") as two, inbox(hub, None) as anonymous:
        sent = await hub.notify_authenticated("maintenance")
        assert (await one.next()).id == sent
        assert (await two.next()).id == sent
        await anonymous.assert_nothing()


async def test_broadcast_reaches_anonymous_connections_too(hub: Hub) -> None:
    async with inbox(hub, "1") as user, inbox(hub, None) as anonymous:
        sent = await hub.broadcast("deploy")
        assert (await user.next()).id == sent
        assert (await anonymous.next()).id == sent


@pytest.mark.parametrize(
    "send",
    [
        pytest.param(lambda hub, ex: hub.notify_user("1", "e", exclude=ex), id="user"),
        pytest.param(lambda hub, ex: hub.notify_users(["1"], "e", exclude=ex), id="users"),
        pytest.param(lambda hub, ex: hub.notify_topic("t", "e", exclude=ex), id="topic"),
        pytest.param(lambda hub, ex: hub.notify_authenticated("e", exclude=ex), id="authenticated"),
        pytest.param(lambda hub, ex: hub.broadcast("e", exclude=ex), id="broadcast"),
    ],
)
async def test_exclude_skips_exactly_that_connection(hub: Hub, send: Any) -> None:
    async with (
        inbox(hub, "1", topics=["t"]) as sender,
        inbox(hub, "1", topics=["t"]) as other_tab,
    ):
        sent = await send(hub, sender.connection_id)
        assert (await other_tab.next()).id == sent
        await sender.assert_nothing()


async def test_every_notification_gets_a_unique_id_that_sorts_in_publish_order(hub: Hub) -> None:
    ids = [await hub.notify_user("1", "e") for _ in range(500)]
    ids += [await hub.broadcast("e") for _ in range(500)]
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == ids


async def test_data_is_delivered_as_json_and_defaults_to_null(hub: Hub) -> None:
    payloads: list[Any] = [None, 0, "text ✓", [1, 2.5, True], {"nested": {"a": [None]}}]
    async with inbox(hub, "1") as box:
        await hub.notify_user("1", "no-data")
        for data in payloads:
            await hub.notify_user("1", "data", data)
        assert [n.data for n in box.notifications] == [None, *payloads]


async def test_publishing_outside_the_hubs_context_raises_runtime_error() -> None:
    hub = Hub()
    with pytest.raises(RuntimeError, match="not running"):
        await hub.notify_user("1", "e")
    async with hub:
        pass
    with pytest.raises(RuntimeError, match="not running"):
        await hub.broadcast("e")


@pytest.mark.parametrize(
    "send",
    [
        pytest.param(lambda hub: hub.notify_users([], "e"), id="no-users"),
        pytest.param(lambda hub: hub.notify_users("42", "e"), id="users-as-a-string"),
        pytest.param(lambda hub: hub.notify_user("", "e"), id="empty-user"),
        pytest.param(lambda hub: hub.notify_topic("bad topic", "e"), id="bad-topic"),
        pytest.param(lambda hub: hub.notify_topic("team:*", "e"), id="wildcard-topic"),
        pytest.param(lambda hub: hub.notify_user("1", ""), id="empty-event"),
        pytest.param(lambda hub: hub.notify_user("1", "e", object()), id="data-not-json"),
        pytest.param(lambda hub: hub.notify_user("1", "e", float("nan")), id="data-nan"),
        pytest.param(lambda hub: hub.notify_user("1", "e", "\ud800"), id="data-lone-surrogate"),
    ],
)
async def test_an_invalid_notification_raises_invalid_notification_and_sends_nothing(
    hub: Hub, send: Any
) -> None:
    async with inbox(hub, "1") as box:
        with pytest.raises(InvalidNotification):
            await send(hub)
        assert hub.metrics["notifications_published"] == 0
        await box.assert_nothing()


# --- several instances --------------------------------------------------------------------


async def test_two_hubs_on_one_bus_behave_like_two_instances() -> None:
    bus = MemoryBus()
    async with (
        Hub(MemoryPropagator(bus)) as a,
        Hub(MemoryPropagator(bus)) as b,
        inbox(b, "42") as on_b,
        inbox(a, "42") as on_a,
        inbox(a, "43") as other,
    ):
        sent = await a.notify_user("42", "order.shipped")
        assert (await on_b.next()).id == sent
        assert (await on_a.next()).id == sent
        sent = await b.broadcast("everyone")
        assert (await on_a.next()).id == (await other.next()).id == sent


async def test_a_key_is_subscribed_only_on_the_hub_holding_a_connection_for_it() -> None:
    bus = MemoryBus()
    async with Hub(MemoryPropagator(bus)) as a, Hub(MemoryPropagator(bus)) as b:
        assert a.propagator.statistics()["subscriptions"] == 0
        async with inbox(b, "42", topics=["news"]):
            # b holds u:42, auth, all and t:news; a holds nothing, so hears nothing.
            assert b.propagator.statistics()["subscriptions"] == 4
            assert a.propagator.statistics()["subscriptions"] == 0
            await a.notify_user("42", "e")
            assert a.propagator.statistics()["received"] == 0
            assert b.propagator.statistics()["received"] == 1
        assert b.propagator.statistics()["subscriptions"] == 0


async def test_a_key_stays_subscribed_until_its_last_connection_leaves(hub: Hub) -> None:
    async with inbox(hub, "1") as first:
        async with inbox(hub, "1"):
            assert hub.propagator.statistics()["subscriptions"] == 3
        assert hub.propagator.statistics()["subscriptions"] == 3
        sent = await hub.notify_user("1", "still-here")
        assert (await first.next()).id == sent
    assert hub.propagator.statistics()["subscriptions"] == 0


# --- registration -----------------------------------------------------------------------------


class SlowSubscribe:
    """A Propagator whose subscriptions take ``delay`` seconds to be confirmed.

    It delegates to a MemoryPropagator and records, in ``log``, when each subscribe started
    and was confirmed; ``started`` is set when the first one starts.
    """

    def __init__(self, delay: float) -> None:
        self.inner = MemoryPropagator()
        self.delay = delay
        self.log: list[str] = []
        self.started = anyio.Event()
        self.calls: list[list[str]] = []

    async def start(self, deliver: Deliver) -> None:
        await self.inner.start(deliver)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def subscribe(self, keys: Collection[str]) -> None:
        self.calls.append(sorted(keys))
        self.log.append("subscribe started")
        self.started.set()
        await anyio.sleep(self.delay)
        await self.inner.subscribe(keys)
        self.log.append("subscribe confirmed")

    async def unsubscribe(self, keys: Collection[str]) -> None:
        await self.inner.unsubscribe(keys)

    async def publish(self, keys: Sequence[str], payload: bytes) -> None:
        await self.inner.publish(keys, payload)

    async def barrier(self, keys: Collection[str]) -> None:
        await self.inner.barrier(keys)

    async def read(self, after: Mapping[str, int | None], limit: int) -> dict[str, StreamHistory]:
        return await self.inner.read(after, limit)

    @property
    def healthy(self) -> bool:
        return self.inner.healthy

    def statistics(self) -> Mapping[str, int]:
        return self.inner.statistics()


async def test_a_second_connection_of_a_user_waits_for_the_subscription_in_flight() -> None:
    propagator = SlowSubscribe(delay=0.2)
    assert isinstance(propagator, Propagator)
    first, second = Connection(Principal("42")), Connection(Principal("42"))

    async def attach(hub: Hub, name: str, connection: Connection) -> None:
        await hub.attach(connection)
        propagator.log.append(f"{name} attached")

    async with Hub(propagator) as hub:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(attach, hub, "first", first)
                await propagator.started.wait()
                tasks.start_soon(attach, hub, "second", second)
        # One subscription for both; neither returned before the backend confirmed it, so a
        # notification published after attach() returns reaches both.
        assert propagator.calls == [["all", "auth", "u:42"]]
        assert propagator.log[:2] == ["subscribe started", "subscribe confirmed"]
        assert sorted(propagator.log[2:]) == ["first attached", "second attached"]
        await hub.notify_user("42", "e")
        assert first.queued == second.queued == 1
        for connection in (first, second):
            await hub.detach(connection)
            connection.release()
        assert hub.state.connection_count == 0


class RefusesSubscriptions(MemoryPropagator):
    async def subscribe(self, keys: Collection[str]) -> None:
        raise PropagationError("backend unreachable")


async def test_a_subscription_that_fails_makes_attach_raise_and_detach_leaves_nothing() -> None:
    async with Hub(RefusesSubscriptions()) as hub:
        connection = Connection(Principal("42"))
        with pytest.raises(PropagationError):
            await hub.attach(connection)
        await hub.detach(connection)
        connection.release()
        assert hub.state.connection_count == 0
        assert hub.state.user_count == 0
        assert list(hub.state.keys()) == []
        assert hub.propagator.statistics()["subscriptions"] == 0


async def test_attach_and_detach_of_a_topic_inbox_leave_nothing(hub: Hub) -> None:
    async with inbox(hub, "1", topics=["a", "b"]), inbox(hub, None):
        assert set(hub.state.keys()) == {"u:1", "auth", "all", "t:a", "t:b"}
    assert list(hub.state.keys()) == []
    assert hub.propagator.statistics()["subscriptions"] == 0


# --- lifecycle and statistics ---------------------------------------------------------------


async def test_a_hub_cannot_be_entered_twice(hub: Hub) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        await hub.__aenter__()


async def test_aclose_is_idempotent() -> None:
    hub = Hub()
    async with hub:
        assert hub.running
    assert not hub.running
    await hub.aclose()
    assert not hub.healthy


async def test_statistics_report_connections_users_and_health() -> None:
    hub = Hub()
    assert hub.statistics()["healthy"] == 0
    async with hub:
        async with inbox(hub, "1"), inbox(hub, "1"), inbox(hub, "2"), inbox(hub, None):
            await hub.notify_user("1", "e")
            stats = hub.statistics()
            assert stats["connections"] == 4
            assert stats["users"] == 2
            assert stats["healthy"] == 1
            assert stats["notifications_published"] == 1
            assert stats["frames_delivered"] == 2
            assert stats["propagator_subscriptions"] == 4
        stats = hub.statistics()
        assert (stats["connections"], stats["users"]) == (0, 0)
