"""The Redis propagators' sequencer, alone: what it delivers for every order in which messages
and history reads can come — exactly once, in offset order, per key.

It runs without Redis: ``read`` is a stream kept here (the same answers the read script gives,
see test_redis_history.py for the real thing) and ``ping`` returns at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager

import anyio
import pytest

from notifykit.envelope import stamp
from notifykit.errors import PropagationError
from notifykit.model import StreamHistory
from notifykit.redis._connection import Settings
from notifykit.redis._sequencer import Sequencer
from notifykit.wire import Position

pytestmark = [pytest.mark.anyio, pytest.mark.asyncio_only]

KEY = "u:42"


def message(offset: int, epoch: str = "e1") -> bytes:
    return stamp(b"\n{n:%d}" % offset, Position(epoch, offset))


class Streams:
    """What the read script would answer, for streams set up by the test."""

    def __init__(self) -> None:
        self.epoch = "e1"
        self.last = 0
        self.first = 1
        self.reads: list[dict[str, int | None]] = []
        self.gate: anyio.Event | None = None
        self.fail = 0

    def publish(self, count: int) -> list[bytes]:
        sent = [message(self.last + n, self.epoch) for n in range(1, count + 1)]
        self.last += count
        return sent

    async def read(self, after: Mapping[str, int | None], limit: int) -> dict[str, StreamHistory]:
        self.reads.append(dict(after))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise PropagationError("Redis is away")
        found = {}
        for key, offset in after.items():
            entries: tuple[tuple[int, bytes], ...] = ()
            if offset is not None:
                start = max(offset + 1, self.first)
                stop = min(self.last, start + limit - 1)
                entries = tuple((o, message(o, self.epoch)) for o in range(start, stop + 1))
            taken = entries[-1][0] if entries else 0
            complete = offset is None or self.last <= max(offset, taken)
            found[key] = StreamHistory(self.epoch, self.last, self.first, entries, complete)
        return found


class Recorded:
    def __init__(self) -> None:
        self.log: list[bytes] = []

    def __call__(self, key: str, payload: bytes) -> None:
        assert key == KEY
        self.log.append(payload)


async def no_wait(keys: Collection[str]) -> None:
    await anyio.lowlevel.checkpoint()


@asynccontextmanager
async def sequencer(
    streams: Streams, *, limit: int = 100, hold_limit: int = 1000
) -> AsyncIterator[tuple[Sequencer, Recorded]]:
    delivered = Recorded()
    settings = Settings(backoff_initial=0.01, backoff_max=0.02)
    running = Sequencer(
        delivered, streams.read, no_wait, settings, limit=limit, hold_limit=hold_limit
    )
    running.start()
    running.track([KEY])
    try:
        yield running, delivered
    finally:
        await running.aclose()


async def settle(running: Sequencer) -> None:
    with anyio.fail_after(5):
        await running.settled([KEY])


async def seeded(running: Sequencer) -> None:
    running.confirmed(KEY)
    await settle(running)


async def test_messages_in_order_pass_straight_through() -> None:
    streams = Streams()
    async with sequencer(streams) as (running, delivered):
        sent = streams.publish(5)
        for payload in sent:
            running.on_message(KEY, payload)
        assert delivered.log == sent
        assert streams.reads == []


async def test_a_new_subscription_learns_its_position_and_catches_up_from_it_later() -> None:
    streams = Streams()
    streams.publish(7)  # before the subscription: none of these is delivered
    async with sequencer(streams) as (running, delivered):
        await seeded(running)
        assert streams.reads == [{KEY: None}]
        missed = streams.publish(2)  # while the connection is down
        running.confirmed(KEY)  # subscribed again
        live = streams.publish(1)
        running.on_message(KEY, live[0])
        await settle(running)
        assert delivered.log == missed + live
        assert streams.reads[-1] == {KEY: 7}


async def test_a_catch_up_drops_what_arrives_both_live_and_from_the_stream() -> None:
    streams = Streams()
    async with sequencer(streams) as (running, delivered):
        await seeded(running)
        first = streams.publish(2)
        for payload in first:
            running.on_message(KEY, payload)
        streams.gate = anyio.Event()
        running.confirmed(KEY)  # reconnected: offsets 3 and 4 are missing
        missed = streams.publish(2)
        overlap = streams.publish(2)  # published after the subscription: live AND read
        for payload in overlap:
            running.on_message(KEY, payload)
        assert delivered.log == first  # held until the read is back
        streams.gate.set()
        await settle(running)
        assert delivered.log == first + missed + overlap
        assert running.duplicates == 2
        assert running.repaired == 4


async def test_a_gap_in_live_messages_is_read_back_before_what_follows() -> None:
    streams = Streams()
    async with sequencer(streams) as (running, delivered):
        await seeded(running)
        sent = streams.publish(6)
        running.on_message(KEY, sent[0])
        running.on_message(KEY, sent[3])  # 2 and 3 never arrived
        running.on_message(KEY, sent[4])
        await settle(running)
        running.on_message(KEY, sent[5])
        assert delivered.log == sent
        assert streams.reads[-1] == {KEY: 1}


async def test_a_gap_beyond_retention_is_counted_and_delivery_goes_on() -> None:
    streams = Streams()
    async with sequencer(streams) as (running, delivered):
        await seeded(running)
        sent = streams.publish(5)
        streams.first = 4  # 2 and 3 were trimmed before they could be read
        running.on_message(KEY, sent[0])
        running.on_message(KEY, sent[4])
        await settle(running)
        assert delivered.log == [sent[0], sent[3], sent[4]]
        assert running.lost == 2


async def test_a_reset_stream_is_delivered_from_its_first_entry() -> None:
    streams = Streams()
    async with sequencer(streams) as (running, delivered):
        await seeded(running)
        old = streams.publish(3)
        for payload in old:
            running.on_message(KEY, payload)
        streams.epoch, streams.last = "e2", 0  # Redis restarted without persistence
        new = streams.publish(3)
        running.on_message(KEY, new[2])  # the first two were missed
        await settle(running)
        assert delivered.log == old + new


async def test_a_catch_up_after_a_reset_reads_the_new_stream_from_its_start() -> None:
    streams = Streams()
    async with sequencer(streams) as (running, delivered):
        await seeded(running)
        old = streams.publish(3)
        for payload in old:
            running.on_message(KEY, payload)
        streams.epoch, streams.last = "e2", 0
        new = streams.publish(2)
        running.confirmed(KEY)
        await settle(running)
        assert delivered.log == old + new
        assert streams.reads[-2:] == [{KEY: 3}, {KEY: 0}]


async def test_a_failed_read_is_retried() -> None:
    streams = Streams()
    async with sequencer(streams) as (running, delivered):
        await seeded(running)
        streams.fail = 2
        missed = streams.publish(3)
        running.confirmed(KEY)
        await settle(running)
        assert delivered.log == missed
        assert running.read_failures == 2


async def test_beyond_the_hold_limit_what_was_held_is_delivered_without_the_read() -> None:
    streams = Streams()
    async with sequencer(streams, hold_limit=3) as (running, delivered):
        await seeded(running)
        streams.gate = anyio.Event()
        running.confirmed(KEY)
        live = streams.publish(4)
        for payload in live:
            running.on_message(KEY, payload)
        assert delivered.log == live
        assert running.overflows == 1
        streams.gate.set()
        await settle(running)
        assert delivered.log == live  # the late read changes nothing


async def test_unsubscribing_forgets_a_key_and_what_was_held_for_it() -> None:
    streams = Streams()
    async with sequencer(streams) as (running, delivered):
        await seeded(running)
        streams.gate = anyio.Event()
        running.confirmed(KEY)
        running.on_message(KEY, streams.publish(1)[0])
        running.forget([KEY])
        streams.gate.set()
        await settle(running)
        assert delivered.log == []
        running.on_message(KEY, streams.publish(1)[0])  # untracked now: passed on as is
        assert len(delivered.log) == 1


async def test_unstamped_payloads_pass_through_untouched() -> None:
    streams = Streams()
    async with sequencer(streams) as (running, delivered):
        running.on_message(KEY, b"\n{}")
        running.on_message(KEY, b"#not a stamp")
        assert delivered.log == [b"\n{}", b"#not a stamp"]


async def test_a_limited_read_is_continued_until_complete() -> None:
    streams = Streams()
    async with sequencer(streams, limit=2) as (running, delivered):
        await seeded(running)
        missed = streams.publish(5)
        running.confirmed(KEY)
        await settle(running)
        assert delivered.log == missed
        assert [read[KEY] for read in streams.reads[1:]] == [0, 2, 4]
