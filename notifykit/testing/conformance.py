"""The contracts of :mod:`notifykit.protocols` as checks any implementation can run.

Like trio's ``trio.testing.check_*_stream`` helpers, each check states one rule in its docstring
and raises :class:`AssertionError` with a message naming the rule when an implementation breaks
it. notifykit runs every check against every implementation it ships; a third-party
implementation runs them from its own test suite::

    @pytest.mark.anyio
    @pytest.mark.parametrize("check", PROPAGATOR_CHECKS, ids=lambda c: c.__name__)
    async def test_my_propagator(check, my_factory):
        await check(my_factory)

Nothing here needs pytest. Every wait is bounded (5 s), and the checks work under ``python -O``.

A :data:`PropagatorFactory` returns, on every call, an async context manager yielding a new,
*unstarted* propagator on the same backend as the others (for Redis: the same server), as the
instances of one deployment are. The checks call ``start``, ``aclose`` (then leave the context)
themselves. Keys are unique per check run, so one backend can serve every check.

Absence is proved with a sentinel, never with a sleep alone: after publishing what must not
arrive, a check publishes to a key every instance is still subscribed to, waits until that
arrives everywhere (the pipe is flowing), allows stragglers a further 0.1 s, then looks.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, contextmanager
from typing import TYPE_CHECKING, TypeAlias

import anyio

from ..connection import Connection
from ..model import Principal, topic_key
from ..protocols import Propagator, SocketState

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "PROPAGATOR_CHECKS",
    "SOCKET_STATE_CHECKS",
    "PropagatorFactory",
    "SocketStateFactory",
    "check_propagator",
    "check_propagator_aclose_is_idempotent_and_final",
    "check_propagator_delivers_own_publishes",
    "check_propagator_delivers_to_every_subscriber_once",
    "check_propagator_keeps_payload_bytes_identical",
    "check_propagator_keeps_per_key_order_and_loses_nothing",
    "check_propagator_last_subscribe_or_unsubscribe_wins",
    "check_propagator_multi_key_publish_delivers_once_per_key",
    "check_propagator_publish_without_subscribers_succeeds",
    "check_propagator_reports_healthy_once_started",
    "check_propagator_routes_only_subscribed_keys",
    "check_propagator_statistics_map_names_to_counts",
    "check_propagator_subscribe_is_confirmed_on_return",
    "check_propagator_subscribe_is_idempotent",
    "check_propagator_survives_a_raising_deliver",
    "check_propagator_unsubscribe_stops_delivery",
    "check_propagator_unsubscribe_unknown_key_is_a_no_op",
    "check_socket_state",
    "check_socket_state_add_reports_first_connection",
    "check_socket_state_counts_distinct_connections_and_users",
    "check_socket_state_forgets_empty_keys",
    "check_socket_state_members_reflect_adds_and_removes",
    "check_socket_state_remove_of_absent_connection_is_a_no_op",
    "check_socket_state_remove_reports_last_connection",
    "check_socket_state_survives_churn_without_leaking",
]

PropagatorFactory: TypeAlias = Callable[[], AbstractAsyncContextManager[Propagator]]
"""Returns a context manager yielding a new unstarted propagator on the shared backend."""

SocketStateFactory: TypeAlias = Callable[[], SocketState]
"""Returns a new, empty socket state."""

_TIMEOUT = 5.0  # seconds any one wait (delivery, subscribe, publish, aclose) may take
_SETTLE = 0.1  # seconds allowed for stragglers once a sentinel proved the pipe is flowing
_STAT_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 200 else f"{text[:200]}... ({len(text)} characters)"


def _first_difference(got: Sequence[object], sent: Sequence[object]) -> int:
    pairs = zip(got, sent, strict=False)
    return next((i for i, (x, y) in enumerate(pairs) if x != y), min(len(got), len(sent)))


@contextmanager
def _bounded(what: str) -> Iterator[None]:
    try:
        with anyio.fail_after(_TIMEOUT):
            yield
    except TimeoutError:
        raise AssertionError(f"{what} did not return within {_TIMEOUT} s") from None


class _DeliberateError(Exception):
    """Raised by a recording deliver to prove that a raising deliver ends nothing."""


class _Node:
    """One started propagator with a recording ``deliver`` and a sentinel key of its own."""

    def __init__(self, name: str, propagator: Propagator, sentinel_key: str) -> None:
        self.name = name
        self.propagator = propagator
        self.sentinel_key = sentinel_key
        self.log: list[tuple[str, bytes]] = []
        self.fail_on: set[bytes] = set()
        self._wakeup: anyio.Event | None = None

    def deliver(self, key: str, payload: bytes) -> None:
        self.log.append((key, payload))
        if self._wakeup is not None:
            self._wakeup.set()
        if payload in self.fail_on:
            raise _DeliberateError("deliver raising on purpose (conformance check)")

    def received(self) -> list[tuple[str, bytes]]:
        """Every delivery except sentinels."""
        return [entry for entry in self.log if entry[0] != self.sentinel_key]

    def payloads(self, key: str) -> list[bytes]:
        return [payload for k, payload in self.log if k == key]

    async def wait_until(self, done: Callable[[], bool], what: str) -> None:
        try:
            with anyio.fail_after(_TIMEOUT):
                while not done():
                    self._wakeup = anyio.Event()
                    await self._wakeup.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: {what} not delivered within {_TIMEOUT} s; "
                f"{len(self.log)} deliveries so far, the last: {_short(self.log[-3:])}"
            ) from None
        finally:
            self._wakeup = None

    async def wait_for(self, key: str, payload: bytes) -> None:
        await self.wait_until(lambda: payload in self.payloads(key), f"{_short(payload)} on {key}")

    async def subscribe(self, *keys: str) -> None:
        with _bounded(f"{self.name}.subscribe({list(keys)})"):
            await self.propagator.subscribe(keys)

    async def unsubscribe(self, *keys: str) -> None:
        with _bounded(f"{self.name}.unsubscribe({list(keys)})"):
            await self.propagator.unsubscribe(keys)

    async def publish(self, keys: Sequence[str], payload: bytes) -> None:
        with _bounded(f"{self.name}.publish({list(keys)}, {_short(payload)})"):
            await self.propagator.publish(keys, payload)

    async def aclose(self) -> None:
        with _bounded(f"{self.name}.aclose()"):
            await self.propagator.aclose()


def _expect_received(node: _Node, expected: list[tuple[str, bytes]], rule: str) -> None:
    actual = node.received()
    _expect(
        actual == expected,
        f"{rule}: {node.name} received {_short(actual)}, expected {_short(expected)}",
    )


class _Cluster(AsyncExitStack):
    """``size`` started instances of one backend, each subscribed to its own sentinel key."""

    def __init__(self, factory: PropagatorFactory, size: int) -> None:
        super().__init__()
        self._factory = factory
        self._size = size
        self._prefix = f"t:nk-conformance-{secrets.token_hex(4)}"
        self._sentinels = 0
        self.nodes: list[_Node] = []

    def key(self, name: str) -> str:
        """A routing key no other check run uses."""
        return f"{self._prefix}-{name}"

    async def __aenter__(self) -> _Cluster:
        await super().__aenter__()
        try:
            for index in range(self._size):
                name = f"instance {'ABCDEFGH'[index]}"
                propagator = await self.enter_async_context(self._factory())
                _expect(
                    isinstance(propagator, Propagator),
                    f"the factory yielded {propagator!r}, which is not a Propagator",
                )
                node = _Node(name, propagator, self.key(f"sentinel-{index}"))
                with _bounded(f"{name}.start(deliver)"):
                    await propagator.start(node.deliver)
                self.push_async_callback(node.aclose)
                await node.subscribe(node.sentinel_key)
                self.nodes.append(node)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def settle(self, publisher: _Node, nodes: Sequence[_Node] | None = None) -> None:
        """Publish a sentinel to each of ``nodes`` (default: all), await them, then let
        stragglers arrive: afterwards, what has not been delivered was not going to be."""
        sent = []
        for node in self.nodes if nodes is None else nodes:
            self._sentinels += 1
            payload = b"sentinel %d" % self._sentinels
            await publisher.publish([node.sentinel_key], payload)
            sent.append((node, payload))
        for node, payload in sent:
            await node.wait_for(node.sentinel_key, payload)
        await anyio.sleep(_SETTLE)


async def check_propagator_routes_only_subscribed_keys(factory: PropagatorFactory) -> None:
    """A payload reaches the instance subscribed to its key and no instance that is not."""
    async with _Cluster(factory, 2) as cluster:
        a, b = cluster.nodes
        for_a, for_b = cluster.key("for-a"), cluster.key("for-b")
        await a.subscribe(for_a)
        await b.subscribe(for_b)
        await b.publish([for_a], b"to A")
        await a.publish([for_b], b"to B")
        await cluster.settle(a)
        rule = "only payloads for subscribed keys are delivered"
        _expect_received(a, [(for_a, b"to A")], rule)
        _expect_received(b, [(for_b, b"to B")], rule)


async def check_propagator_delivers_to_every_subscriber_once(factory: PropagatorFactory) -> None:
    """A payload reaches every instance subscribed to its key, each exactly once."""
    async with _Cluster(factory, 3) as cluster:
        key = cluster.key("shared")
        for node in cluster.nodes:
            await node.subscribe(key)
        await cluster.nodes[1].publish([key], b"first")
        await cluster.nodes[1].publish([key], b"second")
        await cluster.settle(cluster.nodes[0])
        for node in cluster.nodes:
            expected = [(key, b"first"), (key, b"second")]
            _expect_received(node, expected, "every subscriber receives each payload once")


async def check_propagator_delivers_own_publishes(factory: PropagatorFactory) -> None:
    """An instance subscribed to a key receives what it publishes there itself."""
    async with _Cluster(factory, 1) as cluster:
        (a,) = cluster.nodes
        key = cluster.key("self")
        await a.subscribe(key)
        await a.publish([key], b"to myself")
        await a.wait_for(key, b"to myself")
        await cluster.settle(a)
        _expect_received(a, [(key, b"to myself")], "own publishes are delivered once")


_ODD_PAYLOADS = (
    "héllo wörld, ünïcode ✓ 日本語 🎉".encode(),
    b"line one\nline two\n",
    b"\n",
    b'{"type":"notification","data":{"text":"a\\nb"}}\r\n',
    bytes(range(256)),
    bytes((i * 7 + i // 256) % 256 for i in range(64 * 1024)),
)


async def check_propagator_keeps_payload_bytes_identical(factory: PropagatorFactory) -> None:
    """Payloads arrive as ``bytes`` identical to those published: UTF-8 text, newlines, every
    byte value, and 64 KiB."""
    async with _Cluster(factory, 2) as cluster:
        a, b = cluster.nodes
        key = cluster.key("bytes")
        await b.subscribe(key)
        for payload in _ODD_PAYLOADS:
            await a.publish([key], payload)
        await b.wait_until(lambda: len(b.payloads(key)) >= len(_ODD_PAYLOADS), "every payload")
        await cluster.settle(a)
        for got_key, payload in b.received():
            _expect(
                type(got_key) is str and isinstance(payload, bytes),
                f"deliver must get (str, bytes), got ({type(got_key)}, {type(payload)})",
            )
        got = b.payloads(key)
        for index, (payload, sent) in enumerate(zip(got, _ODD_PAYLOADS, strict=False)):
            if payload != sent:
                raise AssertionError(
                    f"payloads must arrive byte-identical: payload #{index} arrived as "
                    f"{len(payload)} bytes for {len(sent)} sent, first difference at byte "
                    f"{_first_difference(payload, sent)}"
                )
        _expect_received(b, [(key, p) for p in _ODD_PAYLOADS], "each payload arrives once")


async def check_propagator_multi_key_publish_delivers_once_per_key(
    factory: PropagatorFactory,
) -> None:
    """One publish to several keys is delivered once per subscribed key, with that key."""
    async with _Cluster(factory, 2) as cluster:
        a, b = cluster.nodes
        k1, k2, k3, nobody = (cluster.key(name) for name in ("k1", "k2", "k3", "nobody"))
        await a.subscribe(k1, k2)
        await b.subscribe(k2, k3)
        await a.publish([k1, k2, k3, nobody], b"multi")
        await cluster.settle(a)
        for node, expected in (
            (a, [(k1, b"multi"), (k2, b"multi")]),
            (b, [(k2, b"multi"), (k3, b"multi")]),
        ):
            actual = sorted(node.received())
            _expect(
                actual == expected,
                f"a publish to several keys is delivered once per subscribed key: "
                f"{node.name} received {actual}, expected {expected}",
            )


async def check_propagator_keeps_per_key_order_and_loses_nothing(
    factory: PropagatorFactory,
) -> None:
    """A burst of 500 payloads on each of two keys arrives complete and in publish order per
    key (a propagator never drops silently)."""
    count = 500
    async with _Cluster(factory, 2) as cluster:
        a, b = cluster.nodes
        keys = (cluster.key("burst-1"), cluster.key("burst-2"))
        await b.subscribe(*keys)
        sent: dict[str, list[bytes]] = {key: [] for key in keys}
        for index in range(count):
            for key in keys:
                payload = b"%s #%d" % (key.encode(), index)
                sent[key].append(payload)
                await a.publish([key], payload)

        def complete() -> bool:
            return all(len(b.payloads(key)) >= count for key in keys)

        await b.wait_until(complete, f"all {count} payloads on each key")
        await cluster.settle(a)
        for key in keys:
            got = b.payloads(key)
            if got != sent[key]:
                raise AssertionError(
                    f"payloads on one key must arrive once each, in publish order: on {key} "
                    f"{len(got)} arrived for {count} sent, first difference at index "
                    f"{_first_difference(got, sent[key])}"
                )


async def check_propagator_subscribe_is_confirmed_on_return(factory: PropagatorFactory) -> None:
    """Once ``subscribe`` returns, a payload published at once by another instance arrives."""
    async with _Cluster(factory, 2) as cluster:
        a, b = cluster.nodes
        keys = [cluster.key(f"fresh-{i}") for i in range(20)]
        for key in keys:
            await b.subscribe(key)
            await a.publish([key], b"right after subscribe")
            await b.wait_for(key, b"right after subscribe")
        await cluster.settle(a)
        expected = [(key, b"right after subscribe") for key in keys]
        _expect_received(b, expected, "a subscription is in effect when subscribe returns")


async def check_propagator_unsubscribe_stops_delivery(factory: PropagatorFactory) -> None:
    """Once ``unsubscribe`` returns, payloads for that key are no longer delivered, from any
    instance."""
    async with _Cluster(factory, 2) as cluster:
        a, b = cluster.nodes
        key = cluster.key("leaving")
        await b.subscribe(key)
        await a.publish([key], b"before")
        await b.wait_for(key, b"before")
        await b.unsubscribe(key)
        await a.publish([key], b"after, from another instance")
        await b.publish([key], b"after, from the same instance")
        await cluster.settle(a)
        _expect_received(b, [(key, b"before")], "nothing is delivered after unsubscribe")


async def check_propagator_subscribe_is_idempotent(factory: PropagatorFactory) -> None:
    """Subscribing to a key again changes nothing: a payload is delivered once, and one
    ``unsubscribe`` ends the subscription (the propagator does not count subscribers)."""
    async with _Cluster(factory, 2) as cluster:
        a, b = cluster.nodes
        key = cluster.key("twice")
        await b.subscribe(key)
        await b.subscribe(key)
        await b.subscribe(key, key)
        await a.publish([key], b"once")
        await cluster.settle(a)
        _expect_received(b, [(key, b"once")], "subscribing twice still delivers once")
        await b.unsubscribe(key)
        await a.publish([key], b"after one unsubscribe")
        await cluster.settle(a)
        _expect_received(b, [(key, b"once")], "one unsubscribe ends a repeated subscription")


async def check_propagator_unsubscribe_unknown_key_is_a_no_op(factory: PropagatorFactory) -> None:
    """Unsubscribing from a key never subscribed to, or twice, succeeds and changes nothing."""
    async with _Cluster(factory, 2) as cluster:
        a, b = cluster.nodes
        never, gone, kept = cluster.key("never"), cluster.key("gone"), cluster.key("kept")
        await b.unsubscribe(never)
        await b.unsubscribe(never)
        await b.subscribe(gone, kept)
        await b.unsubscribe(gone)
        await b.unsubscribe(gone)
        await a.publish([never, gone, kept], b"still flowing")
        await cluster.settle(a)
        _expect_received(b, [(kept, b"still flowing")], "needless unsubscribes change nothing")


async def check_propagator_last_subscribe_or_unsubscribe_wins(factory: PropagatorFactory) -> None:
    """Subscribe and unsubscribe take effect in call order: subscribe, unsubscribe, subscribe
    ends subscribed; unsubscribe, subscribe, unsubscribe ends unsubscribed."""
    async with _Cluster(factory, 2) as cluster:
        a, b = cluster.nodes
        on, off = cluster.key("ends-on"), cluster.key("ends-off")
        await b.subscribe(on)
        await b.unsubscribe(on)
        await b.subscribe(on)
        await b.unsubscribe(off)
        await b.subscribe(off)
        await b.unsubscribe(off)
        await a.publish([on], b"on")
        await a.publish([off], b"off")
        await cluster.settle(a)
        _expect_received(b, [(on, b"on")], "the last subscribe or unsubscribe wins")


async def check_propagator_publish_without_subscribers_succeeds(
    factory: PropagatorFactory,
) -> None:
    """Publishing to a key nobody subscribed to succeeds and delivers nothing."""
    async with _Cluster(factory, 2) as cluster:
        a, b = cluster.nodes
        await a.publish([cluster.key("nobody")], b"into the void")
        await b.publish([cluster.key("nobody"), cluster.key("nobody-2")], b"into the void")
        await cluster.settle(a)
        for node in cluster.nodes:
            _expect_received(node, [], "a publish nobody subscribed to delivers nothing")


async def check_propagator_survives_a_raising_deliver(factory: PropagatorFactory) -> None:
    """A ``deliver`` that raises on one payload does not stop later payloads."""
    async with _Cluster(factory, 2) as cluster:
        a, b = cluster.nodes
        key = cluster.key("raising")
        b.fail_on.update({b"bad 1", b"bad 2"})
        await b.subscribe(key)
        sent = [b"bad 1", b"good 1", b"good 2", b"bad 2", b"good 3"]
        for payload in sent:
            await a.publish([key], payload)
        await b.wait_for(key, b"good 3")
        await cluster.settle(a)
        _expect_received(b, [(key, p) for p in sent], "a raising deliver ends no delivery")


async def check_propagator_reports_healthy_once_started(factory: PropagatorFactory) -> None:
    """``healthy`` is True once ``start`` has returned (with the backend reachable)."""
    async with _Cluster(factory, 1) as cluster:
        (a,) = cluster.nodes
        _expect(a.propagator.healthy is True, "healthy must be True once started")
        await a.publish([cluster.key("h")], b"traffic")
        await cluster.settle(a)
        _expect(a.propagator.healthy is True, "healthy must stay True while the backend is up")


def _expect_statistics(node: _Node) -> None:
    stats = node.propagator.statistics()
    _expect(isinstance(stats, Mapping), f"statistics() must be a Mapping, not {type(stats)}")
    for name, value in stats.items():
        _expect(
            isinstance(name, str) and _STAT_NAME.fullmatch(name) is not None,
            f"statistics() names must be snake_case str, got {name!r}",
        )
        _expect(
            type(value) is int and value >= 0,
            f"statistics()[{name!r}] must be a non-negative int, got {value!r}",
        )


async def check_propagator_statistics_map_names_to_counts(factory: PropagatorFactory) -> None:
    """``statistics()`` maps snake_case names to non-negative ints, before and after traffic."""
    async with _Cluster(factory, 2) as cluster:
        a, b = cluster.nodes
        _expect_statistics(a)
        key = cluster.key("stats")
        await b.subscribe(key)
        await a.publish([key], b"counted")
        await cluster.settle(a)
        _expect_statistics(a)
        _expect_statistics(b)


async def check_propagator_aclose_is_idempotent_and_final(factory: PropagatorFactory) -> None:
    """``aclose()`` may be called again, and once it returns nothing more is delivered."""
    async with _Cluster(factory, 2) as cluster:
        a, b = cluster.nodes
        key = cluster.key("closing")
        await a.subscribe(key)
        await b.subscribe(key)
        await b.aclose()
        await b.aclose()
        delivered = list(b.log)
        await a.publish([key], b"after close")
        await cluster.settle(a, [a])
        _expect(
            b.log == delivered,
            f"nothing is delivered after aclose(); {b.name} received {_short(b.log[-3:])}",
        )
        _expect_received(a, [(key, b"after close")], "others are unaffected by one aclose()")


PROPAGATOR_CHECKS: tuple[Callable[[PropagatorFactory], Awaitable[None]], ...] = (
    check_propagator_routes_only_subscribed_keys,
    check_propagator_delivers_to_every_subscriber_once,
    check_propagator_delivers_own_publishes,
    check_propagator_keeps_payload_bytes_identical,
    check_propagator_multi_key_publish_delivers_once_per_key,
    check_propagator_keeps_per_key_order_and_loses_nothing,
    check_propagator_subscribe_is_confirmed_on_return,
    check_propagator_unsubscribe_stops_delivery,
    check_propagator_subscribe_is_idempotent,
    check_propagator_unsubscribe_unknown_key_is_a_no_op,
    check_propagator_last_subscribe_or_unsubscribe_wins,
    check_propagator_publish_without_subscribers_succeeds,
    check_propagator_survives_a_raising_deliver,
    check_propagator_reports_healthy_once_started,
    check_propagator_statistics_map_names_to_counts,
    check_propagator_aclose_is_idempotent_and_final,
)
"""Every propagator check, for a test suite to parametrize over."""


async def check_propagator(factory: PropagatorFactory) -> None:
    """Run every check in :data:`PROPAGATOR_CHECKS` against propagators from ``factory``."""
    for check in PROPAGATOR_CHECKS:
        await check(factory)


@contextmanager
def _connections() -> Iterator[Callable[[str | None], Connection]]:
    """Make connections for a check, and release their queues when it ends."""
    made: list[Connection] = []

    def make(user_id: str | None) -> Connection:
        connection = Connection(Principal(user_id), queue_size=1)
        made.append(connection)
        return connection

    try:
        yield make
    finally:
        for connection in made:
            # Connection has no public way to close its queue yet; an unclosed anyio stream
            # warns (ResourceWarning) when garbage-collected.
            connection.release()


def _new_state(factory: SocketStateFactory) -> SocketState:
    state = factory()
    _expect(isinstance(state, SocketState), f"the factory returned {state!r}, not a SocketState")
    _expect_empty(state, "a new socket state is empty")
    return state


def _expect_empty(state: SocketState, rule: str) -> None:
    keys = list(state.keys())
    _expect(not keys, f"{rule}: keys() still holds {_short(keys)}")
    _expect(state.connection_count == 0, f"{rule}: connection_count is {state.connection_count}")
    _expect(state.user_count == 0, f"{rule}: user_count is {state.user_count}")


def _expect_keys(state: SocketState, expected: set[str]) -> None:
    keys = list(state.keys())
    _expect(
        len(keys) == len(expected) and set(keys) == expected,
        f"keys() must list exactly the keys with a connection: it is {sorted(keys)}, "
        f"expected {sorted(expected)}",
    )


def _register(state: SocketState, connection: Connection, *topics: str) -> None:
    for key in (*connection.principal.routing_keys(), *map(topic_key, topics)):
        state.add(key, connection)


def _unregister(state: SocketState, connection: Connection, *topics: str) -> None:
    for key in (*connection.principal.routing_keys(), *map(topic_key, topics)):
        state.remove(key, connection)


def _expect_members(state: SocketState, key: str, expected: set[Connection], rule: str) -> None:
    members = state.members(key)
    _expect(
        len(members) == len(expected) and set(members) == expected,
        f"{rule}: members({key!r}) is {_short(list(members))}, expected {_short(expected)}",
    )


def check_socket_state_add_reports_first_connection(factory: SocketStateFactory) -> None:
    """``add`` returns True only for the first connection under a key."""
    with _connections() as make:
        state = _new_state(factory)
        one, two = make("u1"), make("u1")
        _expect(state.add("u:u1", one) is True, "add returns True for a key's first connection")
        _expect(state.add("u:u1", two) is False, "add returns False for a later connection")
        _expect(state.add("u:u1", one) is False, "add returns False for a connection already in")
        _expect(state.add("t:news", two) is True, "add returns True for another key's first")


def check_socket_state_remove_reports_last_connection(factory: SocketStateFactory) -> None:
    """``remove`` returns True only when the last connection leaves a key."""
    with _connections() as make:
        state = _new_state(factory)
        one, two = make("u1"), make("u1")
        state.add("u:u1", one)
        state.add("u:u1", two)
        _expect(state.remove("u:u1", one) is False, "remove returns False while others remain")
        _expect(state.remove("u:u1", two) is True, "remove returns True when the last leaves")


def check_socket_state_remove_of_absent_connection_is_a_no_op(
    factory: SocketStateFactory,
) -> None:
    """Removing a connection that is not under a key changes nothing and returns False."""
    with _connections() as make:
        state = _new_state(factory)
        one, two = make("u1"), make("u2")
        rule = "removing an absent connection returns False"
        _expect(state.remove("u:u1", one) is False, f"{rule} (unknown key)")
        state.add("u:u1", one)
        _expect(state.remove("u:u1", two) is False, f"{rule} (known key, other connection)")
        _expect(state.remove("t:news", one) is False, f"{rule} (connection under other keys)")
        _expect_members(state, "u:u1", {one}, "removing an absent connection changes nothing")
        _expect(state.remove("u:u1", one) is True, "removing the last connection returns True")
        _expect(state.remove("u:u1", one) is False, f"{rule} (removed twice)")


def check_socket_state_members_reflect_adds_and_removes(factory: SocketStateFactory) -> None:
    """``members(key)`` holds exactly the connections added under it and not yet removed."""
    with _connections() as make:
        state = _new_state(factory)
        one, two, three = make("u1"), make("u2"), make(None)
        rule = "members reflects adds and removes"
        _expect_members(state, "t:news", set(), f"{rule} (unknown key)")
        for connection in (one, two, three):
            state.add("t:news", connection)
        state.add("t:sport", two)
        _expect_members(state, "t:news", {one, two, three}, rule)
        _expect_members(state, "t:sport", {two}, rule)
        state.remove("t:news", two)
        _expect_members(state, "t:news", {one, three}, rule)
        _expect_members(state, "t:sport", {two}, rule)
        state.remove("t:news", one)
        state.remove("t:news", three)
        _expect_members(state, "t:news", set(), rule)
        state.add("t:news", two)
        _expect_members(state, "t:news", {two}, f"{rule} (a key used again)")


def check_socket_state_forgets_empty_keys(factory: SocketStateFactory) -> None:
    """``keys()`` lists exactly the keys with a connection; a key leaves with its last one."""
    with _connections() as make:
        state = _new_state(factory)
        one, two, anonymous = make("u1"), make("u2"), make(None)
        _register(state, one, "news")
        _register(state, two, "news", "sport")
        _register(state, anonymous)
        expected = {"u:u1", "u:u2", "auth", "all", "t:news", "t:sport"}
        _expect_keys(state, expected)
        _unregister(state, two, "news", "sport")
        expected -= {"u:u2", "t:sport"}
        _expect_keys(state, expected)
        _unregister(state, one, "news")
        _unregister(state, anonymous)
        _expect_empty(state, "no key is left once every connection is removed")


def check_socket_state_counts_distinct_connections_and_users(factory: SocketStateFactory) -> None:
    """``connection_count`` counts distinct connections; ``user_count`` distinct users with at
    least one (anonymous connections count as connections, not users)."""
    with _connections() as make:
        state = _new_state(factory)
        first, second, other, anonymous = make("u1"), make("u1"), make("u2"), make(None)
        steps = (
            (_register, first, 1, 1),
            (_register, second, 2, 1),
            (_register, other, 3, 2),
            (_register, anonymous, 4, 2),
            (_unregister, first, 3, 2),
            (_unregister, anonymous, 2, 2),
            (_unregister, second, 1, 1),
            (_unregister, other, 0, 0),
        )
        for step, connection, connections, users in steps:
            step(state, connection, "news")
            counts = (state.connection_count, state.user_count)
            _expect(
                counts == (connections, users),
                f"after {step.__name__.lstrip('_')} {connection!r}: (connection_count, "
                f"user_count) is {counts}, expected {(connections, users)}",
            )


def check_socket_state_survives_churn_without_leaking(factory: SocketStateFactory) -> None:
    """1,000 overlapping connect/disconnect cycles keep the counts right and leave nothing."""
    with _connections() as make:
        state = _new_state(factory)
        live: list[tuple[Connection, str]] = []
        for cycle in range(1000):
            connection = make(None if cycle % 10 == 0 else f"user-{cycle % 7}")
            topic = f"topic-{cycle % 3}"
            _register(state, connection, topic)
            live.append((connection, topic))
            if len(live) > 3:
                gone, gone_topic = live.pop(cycle % 4)
                _unregister(state, gone, gone_topic)
            users = {c.user_id for c, _ in live if c.user_id is not None}
            counts = (state.connection_count, state.user_count)
            _expect(
                counts == (len(live), len(users)),
                f"cycle {cycle}: (connection_count, user_count) is {counts}, "
                f"expected {(len(live), len(users))}",
            )
        for connection, topic in live:
            _unregister(state, connection, topic)
        _expect_empty(state, "churn leaves nothing behind")


SOCKET_STATE_CHECKS: tuple[Callable[[SocketStateFactory], None], ...] = (
    check_socket_state_add_reports_first_connection,
    check_socket_state_remove_reports_last_connection,
    check_socket_state_remove_of_absent_connection_is_a_no_op,
    check_socket_state_members_reflect_adds_and_removes,
    check_socket_state_forgets_empty_keys,
    check_socket_state_counts_distinct_connections_and_users,
    check_socket_state_survives_churn_without_leaking,
)
"""Every socket-state check, for a test suite to parametrize over."""


def check_socket_state(factory: SocketStateFactory) -> None:
    """Run every check in :data:`SOCKET_STATE_CHECKS` against states from ``factory``."""
    for check in SOCKET_STATE_CHECKS:
        check(factory)
