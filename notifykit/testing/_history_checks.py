"""The history checks: what :class:`~notifykit.protocols.Propagator` promises about streams,
offsets, epochs, ``read`` and ``barrier``, one rule each.

Public through :mod:`notifykit.testing.conformance`. They run against a factory of propagators
*with* history (any size of at least 10 and a ttl of at least a minute);
:func:`check_history_off_reads_nothing` runs against one *without*.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..envelope import stamp
from ..model import StreamHistory
from ._checking import TIMEOUT, bounded, expect, short
from ._propagator_harness import Cluster, Node, PropagatorFactory

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping

    from ..wire import Position

__all__ = [
    "HISTORY_CHECKS",
    "HistoryCheck",
    "check_history",
    "check_history_barrier_waits_for_earlier_publishes",
    "check_history_complete_says_whether_the_limit_cut_the_read",
    "check_history_epoch_is_stable_across_reads_and_instances",
    "check_history_keeps_a_bounded_number_of_entries",
    "check_history_multi_key_publish_appends_once_per_key",
    "check_history_off_reads_nothing",
    "check_history_offsets_count_up_from_one_without_holes",
    "check_history_read_creates_an_epoch_for_an_unknown_key",
    "check_history_read_returns_the_stamped_payloads_delivered",
]

_MAX_SIZE = 1000
"""The retention bound a stream must show within this many publishes (notifykit's default is
100)."""


async def _read(
    node: Node, after: Mapping[str, int | None], limit: int = 1000
) -> dict[str, StreamHistory]:
    with bounded(f"{node.name}.read({dict(after)}, {limit})", node.timeout):
        found = await node.propagator.read(after, limit)
    for key, stream in found.items():
        expect(
            isinstance(stream, StreamHistory),
            f"read() must map keys to StreamHistory, got {short(stream)} for {key}",
        )
    return found


async def _stream(node: Node, key: str, after: int | None, limit: int = 1000) -> StreamHistory:
    found = await _read(node, {key: after}, limit)
    stream = found.get(key)
    if stream is None:
        raise AssertionError(f"with history, read() must answer for every key; {key} is missing")
    return stream


def _positions(node: Node, key: str) -> list[Position]:
    positions = [position for k, position in node.stamps if k == key]
    for position in positions:
        expect(
            position is not None,
            f"with history, every delivery is stamped with its place; one on {key} was not",
        )
    return [p for p in positions if p is not None]


async def check_history_offsets_count_up_from_one_without_holes(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """A new stream's deliveries are stamped with offsets 1, 2, 3... with no hole and one
    epoch, whichever instance publishes."""
    async with Cluster(factory, 2, timeout) as cluster:
        a, b = cluster.nodes
        key = cluster.key("counting")
        await b.subscribe(key)
        for index in range(30):
            await (a if index % 3 else b).publish([key], b"n%d" % index)
        await b.wait_until(lambda: len(b.payloads(key)) >= 30, "all 30 payloads")
        await cluster.settle(a)
        positions = _positions(b, key)
        offsets = [position.offset for position in positions]
        expect(
            offsets == list(range(1, 31)),
            f"offsets count up from 1 without holes: {b.name} got {short(offsets)}",
        )
        epochs = {position.epoch for position in positions}
        expect(len(epochs) == 1, f"one stream has one epoch while it lives, got {epochs}")


async def check_history_multi_key_publish_appends_once_per_key(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """One publish to several keys appends one entry to each key's stream, nobody subscribed
    or not."""
    async with Cluster(factory, 2, timeout) as cluster:
        a, b = cluster.nodes
        keys = [cluster.key(name) for name in ("m1", "m2", "m3")]
        await b.subscribe(keys[0])
        await a.publish(keys, b"to three")
        found = await _read(b, dict.fromkeys(keys, 0))
        for key in keys:
            stream = found.get(key)
            if stream is None:
                raise AssertionError(f"read() must answer for every key; {key} is missing")
            got = [payload for _, payload in stream.entries]
            expected = [stamp(b"to three", stream.position)]
            expect(
                stream.last == 1 and got == expected,
                f"a publish to several keys appends once to each: {key} holds last="
                f"{stream.last}, {short(got)}",
            )


async def check_history_read_returns_the_stamped_payloads_delivered(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """``read`` returns, byte for byte, the stamped payloads subscribers were delivered, in
    offset order, with their offsets."""
    async with Cluster(factory, 2, timeout) as cluster:
        a, b = cluster.nodes
        key = cluster.key("replay")
        await b.subscribe(key)
        sent = [b"plain", "ünïcode ✓".encode(), b"line\nbreak", bytes(range(256))]
        for payload in sent:
            await a.publish([key], payload)
        await b.wait_until(lambda: len(b.payloads(key)) >= len(sent), "every payload")
        delivered = [
            (position.offset, stamp(payload, position))
            for payload, position in zip(b.payloads(key), _positions(b, key), strict=True)
        ]
        stream = await _stream(a, key, 0)
        expect(
            list(stream.entries) == delivered,
            f"read() returns the stamped payloads delivered: read {short(stream.entries)}, "
            f"delivered {short(delivered)}",
        )
        tail = await _stream(b, key, 2)
        expect(
            list(tail.entries) == delivered[2:],
            f"read(after=2) returns what came after offset 2: {short(tail.entries)}",
        )


async def check_history_epoch_is_stable_across_reads_and_instances(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """A stream's epoch is the same for every read on every instance, before and after
    publishes, and is the one its deliveries carry."""
    async with Cluster(factory, 2, timeout) as cluster:
        a, b = cluster.nodes
        key = cluster.key("epoch")
        await b.subscribe(key)
        epochs = [(await _stream(a, key, None)).epoch, (await _stream(b, key, None)).epoch]
        await a.publish([key], b"one")
        await b.wait_for(key, b"one")
        epochs += [(await _stream(b, key, 0)).epoch, (await _stream(a, key, None)).epoch]
        epochs += [position.epoch for position in _positions(b, key)]
        expect(
            len(set(epochs)) == 1 and isinstance(epochs[0], str) and epochs[0] != "",
            f"a stream keeps one epoch while it lives: read and delivered {epochs}",
        )


async def check_history_read_creates_an_epoch_for_an_unknown_key(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """Reading a stream nobody published to answers offset 0 with a real epoch, the one its
    first notification then carries at offset 1."""
    async with Cluster(factory, 2, timeout) as cluster:
        a, b = cluster.nodes
        key = cluster.key("unknown")
        stream = await _stream(a, key, 0)
        expect(
            (stream.last, stream.first, stream.entries, stream.complete) == (0, 1, (), True),
            f"an unknown stream reads as last=0, first=1, no entries, complete: got "
            f"{short(stream)}",
        )
        await b.subscribe(key)
        await a.publish([key], b"first")
        await b.wait_for(key, b"first")
        positions = _positions(b, key)
        expect(
            [(p.epoch, p.offset) for p in positions] == [(stream.epoch, 1)],
            f"the first notification continues the position read: read {stream.position}, "
            f"delivered {positions}",
        )


async def check_history_keeps_a_bounded_number_of_entries(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """A stream keeps a bounded number of entries — the latest — reached within 1,000
    publishes, and keeps that many as more come."""
    async with Cluster(factory, 1, timeout) as cluster:
        (a,) = cluster.nodes
        key = cluster.key("bounded")
        published = 0
        stream = await _stream(a, key, None)
        while stream.first == 1 and published < _MAX_SIZE + 1:
            for _ in range(50):
                published += 1
                await a.publish([key], b"#%d" % published)
            stream = await _stream(a, key, None)
        expect(
            stream.first > 1,
            f"a stream's history is bounded: {published} publishes, all still retained",
        )
        size = stream.last - stream.first + 1
        for _ in range(7):
            published += 1
            await a.publish([key], b"#%d" % published)
        later = await _stream(a, key, 0, limit=_MAX_SIZE * 2)
        offsets = [offset for offset, _ in later.entries]
        expect(
            later.last == published
            and later.last - later.first + 1 == size
            and offsets == list(range(later.first, later.last + 1)),
            f"a full stream keeps its latest {size} entries: after {published} publishes it "
            f"holds {later.first}..{later.last} and read {short(offsets)}",
        )


async def check_history_complete_says_whether_the_limit_cut_the_read(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """``read`` returns at most ``limit`` entries, the first ones after the offset asked for;
    ``complete`` is False exactly when the limit stopped it short of the last."""
    async with Cluster(factory, 1, timeout) as cluster:
        (a,) = cluster.nodes
        key = cluster.key("limit")
        for index in range(5):
            await a.publish([key], b"e%d" % index)
        cases: list[tuple[int | None, int, list[int], bool]] = [
            (0, 2, [1, 2], False),
            (2, 2, [3, 4], False),
            (3, 2, [4, 5], True),
            (0, 10, [1, 2, 3, 4, 5], True),
            (5, 10, [], True),
            (0, 0, [], False),
            (None, 10, [], True),
        ]
        for after, limit, offsets, complete in cases:
            stream = await _stream(a, key, after, limit)
            got = ([offset for offset, _ in stream.entries], stream.complete)
            expect(
                got == (offsets, complete),
                f"read(after={after}, limit={limit}) must give offsets {offsets} and "
                f"complete={complete}, got {got[0]} and complete={got[1]}",
            )


async def check_history_barrier_waits_for_earlier_publishes(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """Once ``barrier(keys)`` returns, everything another instance published to those keys
    before the call has been delivered."""
    async with Cluster(factory, 2, timeout) as cluster:
        a, b = cluster.nodes
        keys = [cluster.key("barrier-1"), cluster.key("barrier-2")]
        await b.subscribe(*keys)
        for round_ in range(20):
            for key in keys:
                await a.publish([key], b"r%d" % round_)
            with bounded(f"{b.name}.barrier({keys})", timeout):
                await b.propagator.barrier(keys)
            for key in keys:
                expect(
                    len(b.payloads(key)) == round_ + 1,
                    f"barrier returns once earlier publishes are delivered: after round "
                    f"{round_}, {b.name} had {len(b.payloads(key))} payloads on {key}",
                )


async def check_history_off_reads_nothing(
    factory: PropagatorFactory, *, timeout: float = TIMEOUT
) -> None:
    """Run against propagators *without* history: ``read`` returns ``{}``, payloads are
    delivered as published (unstamped), and ``barrier`` returns."""
    async with Cluster(factory, 2, timeout) as cluster:
        a, b = cluster.nodes
        key = cluster.key("off")
        await b.subscribe(key)
        await a.publish([key], b"plain")
        await b.wait_for(key, b"plain")
        found = await _read(b, {key: 0, cluster.key("off-2"): None})
        expect(found == {}, f"without history, read() returns {{}}, got {short(found)}")
        expect(
            [position for k, position in b.stamps if k == key] == [None],
            "without history, payloads are delivered unstamped",
        )
        with bounded(f"{b.name}.barrier([{key!r}])", timeout):
            await b.propagator.barrier([key])


class HistoryCheck(Protocol):
    """The signature of every history check."""

    def __call__(self, factory: PropagatorFactory, *, timeout: float = ...) -> Awaitable[None]:
        """Check one rule against propagators from ``factory``; raise ``AssertionError`` naming
        it when broken, or when any one wait takes longer than ``timeout`` seconds."""
        ...


HISTORY_CHECKS: tuple[HistoryCheck, ...] = (
    check_history_offsets_count_up_from_one_without_holes,
    check_history_multi_key_publish_appends_once_per_key,
    check_history_read_returns_the_stamped_payloads_delivered,
    check_history_epoch_is_stable_across_reads_and_instances,
    check_history_read_creates_an_epoch_for_an_unknown_key,
    check_history_keeps_a_bounded_number_of_entries,
    check_history_complete_says_whether_the_limit_cut_the_read,
    check_history_barrier_waits_for_earlier_publishes,
)
"""Every check for propagators with history (:func:`check_history_off_reads_nothing` is for
those without), for a test suite to parametrize over."""


async def check_history(factory: PropagatorFactory, *, timeout: float = TIMEOUT) -> None:
    """Run every check in :data:`HISTORY_CHECKS` against propagators from ``factory``."""
    for check in HISTORY_CHECKS:
        await check(factory, timeout=timeout)
