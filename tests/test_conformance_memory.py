"""The in-memory implementations pass the conformance suite (notifykit.testing.conformance).

To run the suite against another implementation, copy the first part of this file and change
the two factories; the second part proves the checks catch broken implementations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager

import pytest

from notifykit.connection import Connection
from notifykit.memory import MemoryBus, MemoryPropagator, MemorySocketState
from notifykit.protocols import Deliver, Propagator
from notifykit.testing.conformance import (
    PROPAGATOR_CHECKS,
    SOCKET_STATE_CHECKS,
    PropagatorFactory,
    SocketStateFactory,
    check_propagator,
    check_propagator_aclose_is_idempotent_and_final,
    check_propagator_delivers_to_every_subscriber_once,
    check_propagator_keeps_payload_bytes_identical,
    check_propagator_keeps_per_key_order_and_loses_nothing,
    check_propagator_reports_healthy_once_started,
    check_propagator_routes_only_subscribed_keys,
    check_propagator_statistics_map_names_to_counts,
    check_propagator_subscribe_is_confirmed_on_return,
    check_propagator_subscribe_is_idempotent,
    check_propagator_survives_a_raising_deliver,
    check_propagator_unsubscribe_stops_delivery,
    check_socket_state,
    check_socket_state_counts_distinct_connections_and_users,
    check_socket_state_forgets_empty_keys,
    check_socket_state_survives_churn_without_leaking,
)


def memory_propagators(
    propagator_class: Callable[[MemoryBus], Propagator] = MemoryPropagator,
) -> PropagatorFactory:
    """A factory of propagators that share one bus, like instances sharing one Redis."""
    bus = MemoryBus()

    @asynccontextmanager
    async def factory() -> AsyncIterator[Propagator]:
        yield propagator_class(bus)

    return factory


# -- the memory implementations conform ------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("check", PROPAGATOR_CHECKS, ids=lambda check: check.__name__)
async def test_memory_propagator_passes(
    check: Callable[[PropagatorFactory], Awaitable[None]],
) -> None:
    await check(memory_propagators())


@pytest.mark.anyio
async def test_memory_propagator_passes_the_whole_suite_on_one_bus() -> None:
    await check_propagator(memory_propagators())


@pytest.mark.parametrize("check", SOCKET_STATE_CHECKS, ids=lambda check: check.__name__)
def test_memory_socket_state_passes(check: Callable[[SocketStateFactory], None]) -> None:
    check(MemorySocketState)


def test_memory_socket_state_passes_the_whole_suite() -> None:
    check_socket_state(MemorySocketState)


# -- the checks catch broken implementations -------------------------------------------------

SHORT = 0.1  # seconds: the memory propagator delivers before publish returns; a broken one
# that never delivers fails a check after this long instead of the default 5 s


class DeliversTwice(MemoryPropagator):
    async def start(self, deliver: Deliver) -> None:
        def twice(key: str, payload: bytes) -> None:
            deliver(key, payload)
            deliver(key, payload)

        await super().start(twice)


class EchoesOwnPublishes(MemoryPropagator):
    """Delivers what it publishes even to keys it is not subscribed to."""

    async def start(self, deliver: Deliver) -> None:
        self.own_deliver = deliver
        self.subscribed: set[str] = set()
        await super().start(deliver)

    async def subscribe(self, keys: Collection[str]) -> None:
        self.subscribed.update(keys)
        await super().subscribe(keys)

    async def unsubscribe(self, keys: Collection[str]) -> None:
        self.subscribed.difference_update(keys)
        await super().unsubscribe(keys)

    async def publish(self, keys: Sequence[str], payload: bytes) -> None:
        await super().publish(keys, payload)
        for key in keys:
            if key not in self.subscribed:
                self.own_deliver(key, payload)


class TruncatesLargePayloads(MemoryPropagator):
    async def start(self, deliver: Deliver) -> None:
        await super().start(lambda key, payload: deliver(key, payload[:32768]))


class SwapsTheTenthAndEleventh(MemoryPropagator):
    async def start(self, deliver: Deliver) -> None:
        seen: dict[str, int] = {}
        held: dict[str, bytes] = {}

        def swapping(key: str, payload: bytes) -> None:
            seen[key] = seen.get(key, 0) + 1
            if seen[key] == 10:
                held[key] = payload
                return
            deliver(key, payload)
            if key in held:
                deliver(key, held.pop(key))

        await super().start(swapping)


class SubscribesLate(MemoryPropagator):
    """Returns from subscribe before the subscription is in effect."""

    pending: tuple[str, ...] = ()

    async def _catch_up(self) -> None:
        pending, self.pending = self.pending, ()
        await super().subscribe(pending)

    async def subscribe(self, keys: Collection[str]) -> None:
        await self._catch_up()
        self.pending = tuple(keys)

    async def unsubscribe(self, keys: Collection[str]) -> None:
        await self._catch_up()
        await super().unsubscribe(keys)

    async def publish(self, keys: Sequence[str], payload: bytes) -> None:
        await self._catch_up()
        await super().publish(keys, payload)


class IgnoresUnsubscribe(MemoryPropagator):
    async def unsubscribe(self, keys: Collection[str]) -> None:
        pass


class CountsSubscribers(MemoryPropagator):
    """Needs as many unsubscribes as subscribes, which the contract forbids."""

    async def start(self, deliver: Deliver) -> None:
        self.counts: dict[str, int] = {}
        await super().start(deliver)

    async def subscribe(self, keys: Collection[str]) -> None:
        for key in keys:
            self.counts[key] = self.counts.get(key, 0) + 1
        await super().subscribe(keys)

    async def unsubscribe(self, keys: Collection[str]) -> None:
        for key in keys:
            self.counts[key] = self.counts.get(key, 0) - 1
        await super().unsubscribe([key for key in keys if self.counts[key] <= 0])


class StopsAfterDeliverRaises(MemoryPropagator):
    """Like the NestJS original: one bad message ends the subscription."""

    async def start(self, deliver: Deliver) -> None:
        broken = False

        def fragile(key: str, payload: bytes) -> None:
            nonlocal broken
            if broken:
                return
            try:
                deliver(key, payload)
            except Exception:
                broken = True
                raise

        await super().start(fragile)


class KeepsDeliveringAfterClose(MemoryPropagator):
    async def aclose(self) -> None:
        pass


class NeverHealthy(MemoryPropagator):
    @property
    def healthy(self) -> bool:
        return False


class CamelCaseStatistics(MemoryPropagator):
    def statistics(self) -> Mapping[str, int]:
        return {"messagesPublished": 1}


class FloatStatistics(MemoryPropagator):
    def statistics(self) -> Mapping[str, int]:
        return {"latency_ms": 0.5}  # type: ignore[dict-item]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("broken", "check", "rule"),
    [
        (
            DeliversTwice,
            check_propagator_delivers_to_every_subscriber_once,
            "receives each payload once",
        ),
        (
            EchoesOwnPublishes,
            check_propagator_routes_only_subscribed_keys,
            "only payloads for subscribed keys",
        ),
        (TruncatesLargePayloads, check_propagator_keeps_payload_bytes_identical, "byte-identical"),
        (
            SwapsTheTenthAndEleventh,
            check_propagator_keeps_per_key_order_and_loses_nothing,
            "in publish order",
        ),
        (
            SubscribesLate,
            check_propagator_subscribe_is_confirmed_on_return,
            f"not delivered within {SHORT} s",
        ),
        (
            IgnoresUnsubscribe,
            check_propagator_unsubscribe_stops_delivery,
            "nothing is delivered after unsubscribe",
        ),
        (CountsSubscribers, check_propagator_subscribe_is_idempotent, "one unsubscribe ends"),
        (
            StopsAfterDeliverRaises,
            check_propagator_survives_a_raising_deliver,
            f"not delivered within {SHORT} s",
        ),
        (
            KeepsDeliveringAfterClose,
            check_propagator_aclose_is_idempotent_and_final,
            "nothing is delivered after aclose",
        ),
        (NeverHealthy, check_propagator_reports_healthy_once_started, "healthy must be True"),
        (CamelCaseStatistics, check_propagator_statistics_map_names_to_counts, "snake_case"),
        (FloatStatistics, check_propagator_statistics_map_names_to_counts, "non-negative int"),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
async def test_a_propagator_check_fails_a_propagator_that_breaks_its_rule(
    broken: type[MemoryPropagator],
    check: Callable[[PropagatorFactory], Awaitable[None]],
    rule: str,
) -> None:
    with pytest.raises(AssertionError, match=rule):
        await check(memory_propagators(broken), timeout=SHORT)


class LeakySocketState(MemorySocketState):
    """Keeps a key, empty, after its last connection leaves."""

    __slots__ = ("emptied",)

    def __init__(self) -> None:
        super().__init__()
        self.emptied: set[str] = set()

    def remove(self, key: str, connection: Connection) -> bool:
        emptied = super().remove(key, connection)
        if emptied:
            self.emptied.add(key)
        return emptied

    def keys(self) -> Collection[str]:
        return {*super().keys(), *self.emptied}


class CountsConnectionsPerKey(MemorySocketState):
    """Counts (key, connection) pairs instead of distinct connections."""

    __slots__ = ()

    @property
    def connection_count(self) -> int:
        return sum(len(self.members(key)) for key in self.keys())


@pytest.mark.parametrize(
    ("broken", "check", "rule"),
    [
        (
            LeakySocketState,
            check_socket_state_forgets_empty_keys,
            "exactly the keys with a connection",
        ),
        (
            LeakySocketState,
            check_socket_state_survives_churn_without_leaking,
            "churn leaves nothing behind",
        ),
        (
            CountsConnectionsPerKey,
            check_socket_state_counts_distinct_connections_and_users,
            "connection_count",
        ),
        (
            CountsConnectionsPerKey,
            check_socket_state_survives_churn_without_leaking,
            "connection_count",
        ),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_a_socket_state_check_fails_a_socket_state_that_breaks_its_rule(
    broken: type[MemorySocketState], check: Callable[[SocketStateFactory], None], rule: str
) -> None:
    with pytest.raises(AssertionError, match=rule):
        check(broken)
