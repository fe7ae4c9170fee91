"""The in-memory implementations pass the conformance suite (notifykit.testing.conformance).

To run the suite against another implementation, copy the first part of this file and change
the two factories; the second part proves the checks catch broken implementations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial

import anyio
import anyio.abc
import pytest

from notifykit.connection import Connection
from notifykit.envelope import unstamp
from notifykit.memory import MemoryBus, MemoryPropagator, MemorySocketState
from notifykit.memory.history import new_epoch
from notifykit.model import StreamHistory
from notifykit.protocols import Deliver, Propagator
from notifykit.testing.conformance import (
    HISTORY_CHECKS,
    PROPAGATOR_CHECKS,
    SOCKET_STATE_CHECKS,
    PropagatorFactory,
    SocketStateFactory,
    check_history,
    check_history_barrier_waits_for_earlier_publishes,
    check_history_complete_says_whether_the_limit_cut_the_read,
    check_history_epoch_is_stable_across_reads_and_instances,
    check_history_keeps_a_bounded_number_of_entries,
    check_history_multi_key_publish_appends_once_per_key,
    check_history_off_reads_nothing,
    check_history_offsets_count_up_from_one_without_holes,
    check_history_read_creates_an_epoch_for_an_unknown_key,
    check_history_read_returns_the_stamped_payloads_delivered,
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
    *,
    history_size: int = 100,
) -> PropagatorFactory:
    """A factory of propagators that share one bus, like instances sharing one Redis."""
    bus = MemoryBus(history_size=history_size)

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


@pytest.mark.anyio
@pytest.mark.parametrize("check", HISTORY_CHECKS, ids=lambda check: check.__name__)
async def test_memory_history_passes(
    check: Callable[[PropagatorFactory], Awaitable[None]],
) -> None:
    await check(memory_propagators())


@pytest.mark.anyio
async def test_memory_history_passes_the_whole_suite_on_one_bus() -> None:
    await check_history(memory_propagators(history_size=10))


@pytest.mark.anyio
async def test_memory_propagator_without_history_passes_its_check() -> None:
    await check_history_off_reads_nothing(memory_propagators(history_size=0))


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


class SkipsAnOffset(MemoryPropagator):
    """Every fifth notification takes two offsets."""

    async def publish(self, keys: Sequence[str], payload: bytes) -> None:
        history = self._bus.history
        self.count = getattr(self, "count", 0) + 1
        if history is not None and self.count % 5 == 0:
            for key in keys:
                history.append(key, b"lost")
        await super().publish(keys, payload)


class AppendsTwiceToTheLastKey(MemoryPropagator):
    async def publish(self, keys: Sequence[str], payload: bytes) -> None:
        await super().publish(keys, payload)
        if len(keys) > 1 and self._bus.history is not None:
            self._bus.history.append(keys[-1], payload)


class ReadsUnstampedPayloads(MemoryPropagator):
    async def read(self, after: Mapping[str, int | None], limit: int) -> dict[str, StreamHistory]:
        found = await super().read(after, limit)
        return {
            key: replace(stream, entries=tuple((o, unstamp(p)[1]) for o, p in stream.entries))
            for key, stream in found.items()
        }


class NewEpochOnEveryRead(MemoryPropagator):
    async def read(self, after: Mapping[str, int | None], limit: int) -> dict[str, StreamHistory]:
        found = await super().read(after, limit)
        return {key: replace(stream, epoch=new_epoch()) for key, stream in found.items()}


class ForgetsUnknownKeys(MemoryPropagator):
    async def read(self, after: Mapping[str, int | None], limit: int) -> dict[str, StreamHistory]:
        found = await super().read(after, limit)
        return {key: stream for key, stream in found.items() if stream.last > 0}


class AlwaysComplete(MemoryPropagator):
    async def read(self, after: Mapping[str, int | None], limit: int) -> dict[str, StreamHistory]:
        found = await super().read(after, limit)
        return {key: replace(stream, complete=True) for key, stream in found.items()}


class DeliversLate(MemoryPropagator):
    """Delivers from a task of its own, some time after publish returns; its barrier does not
    wait for that."""

    def __init__(self, bus: MemoryBus, *, tasks: anyio.abc.TaskGroup) -> None:
        super().__init__(bus)
        self.tasks = tasks

    async def start(self, deliver: Deliver) -> None:
        self.late: list[tuple[str, bytes]] = []

        def later(key: str, payload: bytes) -> None:
            self.late.append((key, payload))

        self.real_deliver = deliver
        await super().start(later)

    async def publish(self, keys: Sequence[str], payload: bytes) -> None:
        await super().publish(keys, payload)
        for peer in list(self._bus.subscribers.get(keys[0], ())):
            if isinstance(peer, DeliversLate):
                peer.flush_soon()

    def flush_soon(self) -> None:
        async def flush() -> None:
            await anyio.sleep(0.01)
            late, self.late = self.late, []
            for key, payload in late:
                self.real_deliver(key, payload)

        self.tasks.start_soon(flush)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("broken", "history_size", "check", "rule"),
    [
        (
            SkipsAnOffset,
            100,
            check_history_offsets_count_up_from_one_without_holes,
            "without holes",
        ),
        (
            AppendsTwiceToTheLastKey,
            100,
            check_history_multi_key_publish_appends_once_per_key,
            "appends once to each",
        ),
        (
            ReadsUnstampedPayloads,
            100,
            check_history_read_returns_the_stamped_payloads_delivered,
            "stamped payloads delivered",
        ),
        (
            NewEpochOnEveryRead,
            100,
            check_history_epoch_is_stable_across_reads_and_instances,
            "keeps one epoch",
        ),
        (
            ForgetsUnknownKeys,
            100,
            check_history_read_creates_an_epoch_for_an_unknown_key,
            "must answer for every key",
        ),
        (
            MemoryPropagator,
            10_000,
            check_history_keeps_a_bounded_number_of_entries,
            "history is bounded",
        ),
        (
            AlwaysComplete,
            100,
            check_history_complete_says_whether_the_limit_cut_the_read,
            "complete=False",
        ),
        (
            MemoryPropagator,
            100,
            check_history_off_reads_nothing,
            "without history, read",
        ),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
async def test_a_history_check_fails_a_propagator_that_breaks_its_rule(
    broken: type[MemoryPropagator],
    history_size: int,
    check: Callable[..., Awaitable[None]],
    rule: str,
) -> None:
    # The default timeout: nothing here waits for what never comes, and a loaded machine may
    # take longer than SHORT for one of the thousand publishes of the bounded check.
    with pytest.raises(AssertionError, match=rule):
        await check(memory_propagators(broken, history_size=history_size))


@pytest.mark.anyio
async def test_the_barrier_check_fails_a_barrier_that_does_not_wait() -> None:
    async with anyio.create_task_group() as tasks:
        with pytest.raises(AssertionError, match="barrier returns once earlier publishes"):
            await check_history_barrier_waits_for_earlier_publishes(
                memory_propagators(partial(DeliversLate, tasks=tasks)), timeout=1.0
            )


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
