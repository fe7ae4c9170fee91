"""The envelope: ids, the notification frame encoded once, and the payload propagators carry."""

from __future__ import annotations

import base64
import itertools
import math
import time
from typing import Any

import pytest

from notifykit.connection import Connection
from notifykit.envelope import Envelope, IdGenerator, pack, unpack
from notifykit.errors import InvalidNotification
from notifykit.hub import Hub
from notifykit.memory import MemoryBus, MemoryPropagator
from notifykit.model import Principal, ToAuthenticated, ToEveryone, ToTopic, ToUsers
from notifykit.wire import Notification, parse_server

BASE32HEX = set("0123456789ABCDEFGHIJKLMNOPQRSTUV")


def id_millis(notification_id: str) -> int:
    """The Unix milliseconds in an id: its first 48 of 128 bits (26 base32hex digits = 130)."""
    return int(notification_id, 32) >> (80 + 2)


def next_millisecond(after: int) -> None:
    """Wait (at most one second) until the wall clock is past ``after`` Unix milliseconds."""
    deadline = time.monotonic() + 1.0
    while time.time_ns() // 1_000_000 <= after:
        if time.monotonic() > deadline:
            raise AssertionError("the clock did not advance")
        time.sleep(0.0005)


# --- ids ----------------------------------------------------------------------------------


def test_ids_are_26_base32hex_characters() -> None:
    new_id = IdGenerator()
    for _ in range(100):
        notification_id = new_id()
        assert len(notification_id) == 26
        assert set(notification_id) <= BASE32HEX


def test_ids_from_one_generator_strictly_increase_even_within_a_millisecond() -> None:
    new_id = IdGenerator()
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(a < b for a, b in itertools.pairwise(ids))
    # 10,000 ids take far less than 10,000 ms: many shared a millisecond and still increased.
    assert len({id_millis(i) for i in ids}) < len(ids)


def test_an_id_carries_its_creation_time_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    notification_id = IdGenerator()()
    after = time.time_ns() // 1_000_000
    assert before <= id_millis(notification_id) <= after


def test_ids_from_different_generators_sort_by_time_to_the_millisecond() -> None:
    first = IdGenerator()()
    next_millisecond(id_millis(first))
    second = IdGenerator()()
    assert first < second
    next_millisecond(id_millis(second))
    # A generator that already issued ids does not get ahead of a fresh one on a later tick.
    assert IdGenerator()() > first


# --- the envelope and its frame -----------------------------------------------------------


def envelope(
    target: Any = None,
    *,
    data: Any = None,
    event: str = "order.shipped",
    exclude: str | None = None,
) -> Envelope:
    return Envelope(
        "0ABC", event, data, target or ToUsers(("42",)), exclude=exclude, created_at=1700000000123
    )


def test_the_frame_is_the_notification_clients_receive() -> None:
    frame = envelope(data={"order": 7}).frame()
    assert frame == (
        '{"type":"notification","id":"0ABC","event":"order.shipped",'
        '"data":{"order":7},"ts":1700000000123}'
    )
    assert parse_server(frame) == Notification("0ABC", "order.shipped", {"order": 7}, 1700000000123)


def test_a_topic_notification_carries_its_topic() -> None:
    frame = envelope(ToTopic("team:7")).frame()
    assert parse_server(frame) == Notification(
        "0ABC", "order.shipped", None, 1700000000123, "team:7"
    )


@pytest.mark.parametrize("target", [ToUsers(("1", "2")), ToAuthenticated(), ToEveryone()])
def test_other_notifications_carry_no_topic(target: Any) -> None:
    assert '"topic"' not in envelope(target).frame()


def test_created_at_defaults_to_now_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    created = Envelope("0ABC", "e", None, ToEveryone()).created_at
    assert before <= created <= time.time_ns() // 1_000_000


def test_keys_are_the_targets_routing_keys() -> None:
    assert envelope(ToUsers(("1", "2", "1"))).keys() == ("u:1", "u:2")
    assert envelope(ToTopic("t")).keys() == ("t:t",)


@pytest.mark.parametrize(
    "event",
    [
        pytest.param("", id="empty"),
        pytest.param(None, id="none"),
        pytest.param(7, id="int"),
        pytest.param(b"event", id="bytes"),
        pytest.param("e" * 257, id="too-long"),
    ],
)
def test_a_bad_event_is_refused(event: Any) -> None:
    with pytest.raises(InvalidNotification, match="event"):
        envelope(event=event)


def test_an_event_of_256_characters_is_fine() -> None:
    assert envelope(event="e" * 256).event == "e" * 256


@pytest.mark.parametrize("exclude", ["a\nb", "\n", 5])
def test_an_exclude_that_cannot_be_a_connection_id_is_refused(exclude: Any) -> None:
    with pytest.raises(InvalidNotification, match="exclude"):
        envelope(exclude=exclude)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({1, 2}, id="set"),
        pytest.param(object(), id="object"),
        pytest.param(math.nan, id="nan"),
        pytest.param({"x": [math.inf]}, id="nested-inf"),
        pytest.param("\ud800", id="lone-surrogate"),
        pytest.param({"\udfff": 1}, id="lone-surrogate-key"),
        pytest.param(["ok", "bad \ud83d"], id="nested-lone-surrogate"),
    ],
)
def test_data_that_is_not_json_is_refused_when_packed(data: Any) -> None:
    with pytest.raises(InvalidNotification):
        pack(envelope(data=data))


def test_an_event_with_a_lone_surrogate_is_refused_when_packed() -> None:
    with pytest.raises(InvalidNotification):
        pack(envelope(event="order\ud800"))


# --- the payload --------------------------------------------------------------------------


def test_pack_is_exclude_newline_frame() -> None:
    e = envelope(data=[1], exclude="conn-1")
    assert pack(e) == b"conn-1\n" + e.frame().encode()


def test_pack_without_exclude_starts_with_the_newline() -> None:
    e = envelope(data="é")
    assert pack(e) == b"\n" + e.frame().encode("utf-8")


def test_unpack_gives_back_exclude_and_the_exact_frame_text() -> None:
    e = envelope(data={"text": "naïve ☃ 😀"}, exclude="abc_DEF-123")
    assert unpack(pack(e)) == ("abc_DEF-123", None, e.frame())


def test_unpack_without_exclude_gives_none() -> None:
    e = envelope(data=[1, 2])
    assert unpack(pack(e)) == (None, None, e.frame())


def test_a_frame_holding_newlines_in_its_data_survives_the_payload() -> None:
    e = envelope(data="line 1\nline 2", exclude="c")
    assert unpack(pack(e)) == ("c", None, e.frame())


@pytest.mark.parametrize("payload", [b"", b"no newline at all", b'{"type":"notification"}'])
def test_unpack_refuses_a_payload_without_newline(payload: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the contract is "ValueError", nothing finer
        unpack(payload)


def test_unpack_refuses_a_frame_that_is_not_utf8() -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        unpack(b"\n\xff\xfe")


@pytest.mark.parametrize("exclude", ["café", "\ud800", "a b", "x" * 65, ""])
def test_an_exclude_that_is_not_a_connection_id_is_invalid(exclude: str) -> None:
    # A connection id is what the welcome frame gave: 1-64 of A-Z a-z 0-9 _ -. Anything else
    # would be refused here rather than lose the notification for everyone downstream.
    with pytest.raises(InvalidNotification, match="connection id"):
        envelope(exclude=exclude)


# --- encoded once -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_without_history_one_publish_sends_the_same_payload_object_to_every_key() -> None:
    bus = MemoryBus(history_size=0)
    seen: list[tuple[str, bytes]] = []
    recorder = MemoryPropagator(bus)
    await recorder.start(lambda key, payload: seen.append((key, payload)))
    try:
        await recorder.subscribe(["u:1", "u:2", "u:3"])
        async with Hub(MemoryPropagator(bus)) as hub:
            notification_id = await hub.notify_users(["1", "2", "3"], "e", {"x": 1})
    finally:
        await recorder.aclose()
    assert [key for key, _ in seen] == ["u:1", "u:2", "u:3"]
    payload = seen[0][1]
    assert all(p is payload for _, p in seen)
    exclude, _, frame = unpack(payload)
    assert exclude is None
    notification = parse_server(frame)
    assert isinstance(notification, Notification)
    assert notification.id == notification_id


class Recorder:
    """A transport that keeps the very objects it is handed."""

    def __init__(self, frames: list[str]) -> None:
        self.frames = frames

    def send_now(self, text: str) -> bool:
        self.frames.append(text)
        return True


async def frames_of_one_publish_to_users_1_and_2(hub: Hub) -> list[str]:
    """What three connections (two of user 1, one of user 2) are handed for one publish."""
    frames: list[str] = []
    connections = [Connection(Principal(u)) for u in ("1", "1", "2")]
    for connection in connections:
        connection.start_sending(Recorder(frames), None)  # type: ignore[arg-type]
        await hub.attach(connection)
    try:
        await hub.notify_users(["1", "2"], "e", {"x": 1})
    finally:
        for connection in connections:
            await hub.detach(connection)
            connection.release()
    assert len(frames) == 3
    for frame in frames:
        notification = parse_server(frame)
        assert isinstance(notification, Notification)
        assert (notification.event, notification.data) == ("e", {"x": 1})
    return frames


@pytest.mark.anyio
async def test_without_history_every_connection_is_handed_the_same_frame_object() -> None:
    # One JSON encoding and one UTF-8 decode for the whole publish: every connection, under
    # either key, is handed the very same frame string.
    async with Hub(MemoryPropagator(history_size=0)) as hub:
        frames = await frames_of_one_publish_to_users_1_and_2(hub)
    assert frames[0] is frames[1]
    assert frames[2] is frames[0]


@pytest.mark.anyio
async def test_with_history_the_connections_of_one_stream_share_one_frame_object() -> None:
    # Each stream's frame carries its place in that stream: one frame per stream, shared by
    # every connection receiving from it.
    async with Hub() as hub:
        frames = await frames_of_one_publish_to_users_1_and_2(hub)
    assert frames[0] is frames[1]
    assert frames[2] is not frames[0]
    places = [parse_server(f) for f in frames]
    assert [(n.stream, n.offset) for n in places] == [("u:1", 1), ("u:1", 1), ("u:2", 1)]  # type: ignore[union-attr]


def test_ids_are_the_base32hex_text_of_their_128_bits() -> None:
    for _ in range(200):
        text = IdGenerator()()
        value = int(text, 32) >> 2  # 26 base32 digits hold the 128 bits and 2 bits of padding
        assert base64.b32hexencode(value.to_bytes(16, "big")).decode()[:26] == text
