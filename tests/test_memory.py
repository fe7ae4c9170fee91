"""Behaviour of the in-memory implementations beyond the conformance suite."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

from notifykit.connection import Connection
from notifykit.envelope import unstamp
from notifykit.errors import NotRunning
from notifykit.memory import MemoryBus, MemoryPropagator, MemorySocketState
from notifykit.model import Principal
from notifykit.protocols import Propagator, SocketState


class Recorder:
    """A deliver callback that remembers what it was given (payloads as published: the
    history stamp is taken off; tests/test_history.py is about stamps)."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, bytes]] = []

    def __call__(self, key: str, payload: bytes) -> None:
        self.deliveries.append((key, unstamp(payload)[1]))


@pytest.fixture
def make_connection() -> Iterator[Callable[[str | None], Connection]]:
    """Connections whose queues are closed at teardown (an unclosed queue warns when freed)."""
    made: list[Connection] = []

    def make(user_id: str | None) -> Connection:
        connection = Connection(Principal(user_id))
        made.append(connection)
        return connection

    yield make
    for connection in made:
        connection.release()


def test_memory_implementations_satisfy_the_runtime_protocols() -> None:
    assert isinstance(MemoryPropagator(), Propagator)
    assert isinstance(MemorySocketState(), SocketState)


# -- MemoryPropagator lifecycle --------------------------------------------------------------


@pytest.mark.anyio
async def test_publishing_before_start_raises_not_running() -> None:
    with pytest.raises(NotRunning, match="not started"):
        await MemoryPropagator().publish(["u:1"], b"x")


@pytest.mark.anyio
async def test_subscribing_before_start_raises_not_running() -> None:
    with pytest.raises(NotRunning, match="not started"):
        await MemoryPropagator().subscribe(["u:1"])


@pytest.mark.anyio
async def test_starting_twice_raises_runtime_error() -> None:
    propagator = MemoryPropagator()
    await propagator.start(Recorder())
    with pytest.raises(RuntimeError, match="already started"):
        await propagator.start(Recorder())
    await propagator.aclose()


@pytest.mark.anyio
async def test_publishing_after_aclose_raises_not_running() -> None:
    propagator = MemoryPropagator()
    await propagator.start(Recorder())
    await propagator.aclose()
    with pytest.raises(NotRunning):
        await propagator.publish(["u:1"], b"x")


@pytest.mark.anyio
async def test_aclose_before_start_is_harmless() -> None:
    propagator = MemoryPropagator()
    await propagator.aclose()
    assert propagator.healthy is False


@pytest.mark.anyio
async def test_healthy_only_between_start_and_aclose() -> None:
    propagator = MemoryPropagator()
    assert propagator.healthy is False
    await propagator.start(Recorder())
    assert propagator.healthy is True
    await propagator.aclose()
    assert propagator.healthy is False


# -- MemoryPropagator delivery ---------------------------------------------------------------


@pytest.mark.anyio
async def test_delivery_has_happened_when_publish_returns() -> None:
    bus = MemoryBus()
    sender, receiver = MemoryPropagator(bus), MemoryPropagator(bus)
    recorder = Recorder()
    await sender.start(Recorder())
    await receiver.start(recorder)
    await receiver.subscribe(["u:1"])
    await sender.publish(["u:1"], b"now")
    assert recorder.deliveries == [("u:1", b"now")]
    await sender.aclose()
    await receiver.aclose()


@pytest.mark.anyio
async def test_propagators_without_a_shared_bus_do_not_hear_each_other() -> None:
    first, second = MemoryPropagator(), MemoryPropagator()
    heard = Recorder()
    await first.start(Recorder())
    await second.start(heard)
    await second.subscribe(["u:1"])
    await first.publish(["u:1"], b"unheard")
    await second.publish(["u:1"], b"heard")
    assert heard.deliveries == [("u:1", b"heard")]
    await first.aclose()
    await second.aclose()


@pytest.mark.anyio
async def test_a_raising_deliver_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def failing(key: str, payload: bytes) -> None:
        raise ValueError("boom")

    propagator = MemoryPropagator()
    await propagator.start(failing)
    await propagator.subscribe(["u:1"])
    with caplog.at_level(logging.ERROR, logger="notifykit.memory"):
        await propagator.publish(["u:1"], b"x")
    [record] = caplog.records
    assert record.name == "notifykit.memory"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)
    await propagator.aclose()


@pytest.mark.anyio
async def test_the_bus_forgets_a_key_when_its_last_subscriber_leaves() -> None:
    bus = MemoryBus()
    first, second = MemoryPropagator(bus), MemoryPropagator(bus)
    await first.start(Recorder())
    await second.start(Recorder())
    await first.subscribe(["u:1", "t:news"])
    await second.subscribe(["u:1"])
    await first.unsubscribe(["u:1"])
    assert set(bus.subscribers) == {"u:1", "t:news"}
    await second.aclose()
    assert set(bus.subscribers) == {"t:news"}
    await first.aclose()
    assert bus.subscribers == {}


# -- MemoryPropagator statistics -------------------------------------------------------------


@pytest.mark.anyio
async def test_statistics_count_publishes_deliveries_and_subscriptions() -> None:
    bus = MemoryBus(history_size=0)
    sender, receiver = MemoryPropagator(bus), MemoryPropagator(bus)
    await sender.start(Recorder())
    await receiver.start(Recorder())
    assert receiver.statistics() == {"published": 0, "received": 0, "subscriptions": 0}

    await receiver.subscribe(["u:1", "t:news", "u:1"])
    await sender.publish(["u:1", "t:news", "u:2"], b"three keys, two subscribed")
    await sender.publish(["u:1"], b"one key")

    assert sender.statistics() == {"published": 2, "received": 0, "subscriptions": 0}
    assert receiver.statistics() == {"published": 0, "received": 3, "subscriptions": 2}
    await receiver.aclose()
    assert receiver.statistics()["subscriptions"] == 0
    await sender.aclose()


# -- MemorySocketState -----------------------------------------------------------------------


def test_user_count_counts_only_user_keys(
    make_connection: Callable[[str | None], Connection],
) -> None:
    state = MemorySocketState()
    connection = make_connection("42")
    state.add("t:news", connection)
    state.add("auth", connection)
    assert state.user_count == 0
    state.add("u:42", connection)
    assert state.user_count == 1
    state.remove("u:42", connection)
    assert state.user_count == 0


def test_members_of_an_unknown_key_is_empty() -> None:
    assert len(MemorySocketState().members("u:nobody")) == 0
