"""The propagator checks: the :class:`~notifykit.protocols.Propagator` contract, one rule each.

Public through :mod:`notifykit.testing.conformance`, which says how to run them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Protocol

from ._checking import STAT_NAME, TIMEOUT, expect, short
from ._propagator_harness import (
    Cluster,
    Node,
    PropagatorFactory,
    expect_received,
    first_difference,
)

__all__ = [
    "PROPAGATOR_CHECKS",
    "PropagatorCheck",
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
]


async def check_propagator_routes_only_subscribed_keys(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """A payload reaches the instance subscribed to its key and no instance that is not."""
    async with Cluster(factory, 2, timeout) as cluster:
        a, b = cluster.nodes
        for_a, for_b = cluster.key("for-a"), cluster.key("for-b")
        await a.subscribe(for_a)
        await b.subscribe(for_b)
        await b.publish([for_a], b"to A")
        await a.publish([for_b], b"to B")
        await cluster.settle(a)
        rule = "only payloads for subscribed keys are delivered"
        expect_received(a, [(for_a, b"to A")], rule)
        expect_received(b, [(for_b, b"to B")], rule)


async def check_propagator_delivers_to_every_subscriber_once(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """A payload reaches every instance subscribed to its key, each exactly once."""
    async with Cluster(factory, 3, timeout) as cluster:
        key = cluster.key("shared")
        for node in cluster.nodes:
            await node.subscribe(key)
        await cluster.nodes[1].publish([key], b"first")
        await cluster.nodes[1].publish([key], b"second")
        await cluster.settle(cluster.nodes[0])
        for node in cluster.nodes:
            expected = [(key, b"first"), (key, b"second")]
            expect_received(node, expected, "every subscriber receives each payload once")


async def check_propagator_delivers_own_publishes(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """An instance subscribed to a key receives what it publishes there itself."""
    async with Cluster(factory, 1, timeout) as cluster:
        (a,) = cluster.nodes
        key = cluster.key("self")
        await a.subscribe(key)
        await a.publish([key], b"to myself")
        await a.wait_for(key, b"to myself")
        await cluster.settle(a)
        expect_received(a, [(key, b"to myself")], "own publishes are delivered once")


_ODD_PAYLOADS = (
    "héllo wörld, ünïcode ✓ 日本語 🎉".encode(),
    b"line one\nline two\n",
    b"\n",
    b'{"type":"notification","data":{"text":"a\\nb"}}\r\n',
    bytes(range(256)),
    bytes((i * 7 + i // 256) % 256 for i in range(64 * 1024)),
)


async def check_propagator_keeps_payload_bytes_identical(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """Payloads arrive as ``bytes`` identical to those published: UTF-8 text, newlines, every
    byte value, and 64 KiB."""
    async with Cluster(factory, 2, timeout) as cluster:
        a, b = cluster.nodes
        key = cluster.key("bytes")
        await b.subscribe(key)
        for payload in _ODD_PAYLOADS:
            await a.publish([key], payload)
        await b.wait_until(lambda: len(b.payloads(key)) >= len(_ODD_PAYLOADS), "every payload")
        await cluster.settle(a)
        for got_key, payload in b.received():
            expect(
                type(got_key) is str and isinstance(payload, bytes),
                f"deliver must get (str, bytes), got ({type(got_key)}, {type(payload)})",
            )
        got = b.payloads(key)
        for index, (payload, sent) in enumerate(zip(got, _ODD_PAYLOADS, strict=False)):
            if payload != sent:
                raise AssertionError(
                    f"payloads must arrive byte-identical: payload #{index} arrived as "
                    f"{len(payload)} bytes for {len(sent)} sent, first difference at byte "
                    f"{first_difference(payload, sent)}"
                )
        expect_received(b, [(key, p) for p in _ODD_PAYLOADS], "each payload arrives once")


async def check_propagator_multi_key_publish_delivers_once_per_key(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """One publish to several keys is delivered once per subscribed key, with that key."""
    async with Cluster(factory, 2, timeout) as cluster:
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
            expect(
                actual == expected,
                f"a publish to several keys is delivered once per subscribed key: "
                f"{node.name} received {actual}, expected {expected}",
            )


async def check_propagator_keeps_per_key_order_and_loses_nothing(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """A burst of 500 payloads on each of two keys arrives complete and in publish order per
    key (a propagator never drops silently)."""
    count = 500
    async with Cluster(factory, 2, timeout) as cluster:
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
                    f"{first_difference(got, sent[key])}"
                )


async def check_propagator_subscribe_is_confirmed_on_return(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """Once ``subscribe`` returns, a payload published at once by another instance arrives."""
    async with Cluster(factory, 2, timeout) as cluster:
        a, b = cluster.nodes
        keys = [cluster.key(f"fresh-{i}") for i in range(20)]
        for key in keys:
            await b.subscribe(key)
            await a.publish([key], b"right after subscribe")
            await b.wait_for(key, b"right after subscribe")
        await cluster.settle(a)
        expected = [(key, b"right after subscribe") for key in keys]
        expect_received(b, expected, "a subscription is in effect when subscribe returns")


async def check_propagator_unsubscribe_stops_delivery(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """Once ``unsubscribe`` returns, payloads for that key are no longer delivered, from any
    instance."""
    async with Cluster(factory, 2, timeout) as cluster:
        a, b = cluster.nodes
        key = cluster.key("leaving")
        await b.subscribe(key)
        await a.publish([key], b"before")
        await b.wait_for(key, b"before")
        await b.unsubscribe(key)
        await a.publish([key], b"after, from another instance")
        await b.publish([key], b"after, from the same instance")
        await cluster.settle(a)
        expect_received(b, [(key, b"before")], "nothing is delivered after unsubscribe")


async def check_propagator_subscribe_is_idempotent(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """Subscribing to a key again changes nothing: a payload is delivered once, and one
    ``unsubscribe`` ends the subscription (the propagator does not count subscribers)."""
    async with Cluster(factory, 2, timeout) as cluster:
        a, b = cluster.nodes
        key = cluster.key("twice")
        await b.subscribe(key)
        await b.subscribe(key)
        await b.subscribe(key, key)
        await a.publish([key], b"once")
        await cluster.settle(a)
        expect_received(b, [(key, b"once")], "subscribing twice still delivers once")
        await b.unsubscribe(key)
        await a.publish([key], b"after one unsubscribe")
        await cluster.settle(a)
        expect_received(b, [(key, b"once")], "one unsubscribe ends a repeated subscription")


async def check_propagator_unsubscribe_unknown_key_is_a_no_op(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """Unsubscribing from a key never subscribed to, or twice, succeeds and changes nothing."""
    async with Cluster(factory, 2, timeout) as cluster:
        a, b = cluster.nodes
        never, gone, kept = cluster.key("never"), cluster.key("gone"), cluster.key("kept")
        await b.unsubscribe(never)
        await b.unsubscribe(never)
        await b.subscribe(gone, kept)
        await b.unsubscribe(gone)
        await b.unsubscribe(gone)
        await a.publish([never, gone, kept], b"still flowing")
        await cluster.settle(a)
        expect_received(b, [(kept, b"still flowing")], "needless unsubscribes change nothing")


async def check_propagator_last_subscribe_or_unsubscribe_wins(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """Subscribe and unsubscribe take effect in call order: subscribe, unsubscribe, subscribe
    ends subscribed; unsubscribe, subscribe, unsubscribe ends unsubscribed."""
    async with Cluster(factory, 2, timeout) as cluster:
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
        expect_received(b, [(on, b"on")], "the last subscribe or unsubscribe wins")


async def check_propagator_publish_without_subscribers_succeeds(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """Publishing to a key nobody subscribed to succeeds and delivers nothing."""
    async with Cluster(factory, 2, timeout) as cluster:
        a, b = cluster.nodes
        await a.publish([cluster.key("nobody")], b"into the void")
        await b.publish([cluster.key("nobody"), cluster.key("nobody-2")], b"into the void")
        await cluster.settle(a)
        for node in cluster.nodes:
            expect_received(node, [], "a publish nobody subscribed to delivers nothing")


async def check_propagator_survives_a_raising_deliver(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """A ``deliver`` that raises on one payload does not stop later payloads."""
    async with Cluster(factory, 2, timeout) as cluster:
        a, b = cluster.nodes
        key = cluster.key("raising")
        b.fail_on.update({b"bad 1", b"bad 2"})
        await b.subscribe(key)
        sent = [b"bad 1", b"good 1", b"good 2", b"bad 2", b"good 3"]
        for payload in sent:
            await a.publish([key], payload)
        await b.wait_for(key, b"good 3")
        await cluster.settle(a)
        expect_received(b, [(key, p) for p in sent], "a raising deliver ends no delivery")


async def check_propagator_reports_healthy_once_started(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """``healthy`` is True once ``start`` has returned (with the backend reachable)."""
    async with Cluster(factory, 1, timeout) as cluster:
        (a,) = cluster.nodes
        expect(a.propagator.healthy is True, "healthy must be True once started")
        await a.publish([cluster.key("h")], b"traffic")
        await cluster.settle(a)
        expect(a.propagator.healthy is True, "healthy must stay True while the backend is up")


def _expect_statistics(node: Node) -> None:
    stats = node.propagator.statistics()
    expect(isinstance(stats, Mapping), f"statistics() must be a Mapping, not {type(stats)}")
    for name, value in stats.items():
        expect(
            isinstance(name, str) and STAT_NAME.fullmatch(name) is not None,
            f"statistics() names must be snake_case str, got {name!r}",
        )
        expect(
            type(value) is int and value >= 0,
            f"statistics()[{name!r}] must be a non-negative int, got {value!r}",
        )


async def check_propagator_statistics_map_names_to_counts(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """``statistics()`` maps snake_case names to non-negative ints, before and after traffic."""
    async with Cluster(factory, 2, timeout) as cluster:
        a, b = cluster.nodes
        _expect_statistics(a)
        key = cluster.key("stats")
        await b.subscribe(key)
        await a.publish([key], b"counted")
        await cluster.settle(a)
        _expect_statistics(a)
        _expect_statistics(b)


async def check_propagator_aclose_is_idempotent_and_final(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """``aclose()`` may be called again, and once it returns nothing more is delivered."""
    async with Cluster(factory, 2, timeout) as cluster:
        a, b = cluster.nodes
        key = cluster.key("closing")
        await a.subscribe(key)
        await b.subscribe(key)
        await b.aclose()
        await b.aclose()
        delivered = list(b.log)
        await a.publish([key], b"after close")
        await cluster.settle(a, [a])
        expect(
            b.log == delivered,
            f"nothing is delivered after aclose(); {b.name} received {short(b.log[-3:])}",
        )
        expect_received(a, [(key, b"after close")], "others are unaffected by one aclose()")


class PropagatorCheck(Protocol):
    """The signature of every propagator check."""

    def __call__(self, factory: PropagatorFactory, *, timeout: float = ...) -> Awaitable[None]:
        """Check one rule against propagators from ``factory``; raise ``AssertionError`` naming
        it when broken, or when any one wait takes longer than ``timeout`` seconds."""
        ...


PROPAGATOR_CHECKS: tuple[PropagatorCheck, ...] = (
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


async def check_propagator(factory: PropagatorFactory, *, timeout: float = TIMEOUT) -> None:
    """Run every check in :data:`PROPAGATOR_CHECKS` against propagators from ``factory``."""
    for check in PROPAGATOR_CHECKS:
        await check(factory, timeout=timeout)
