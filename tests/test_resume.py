"""Resume: a client that reconnects with its positions gets exactly what it missed, then goes on
live — no gap, no duplicate, in order per stream — or is told ``recovered: false``.

Real gateway and hub over in-memory websockets (tests/memory_transport.py); docs/guarantees.md
is the contract these tests hold the server to.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import pytest
from memory_transport import MemoryClient, ServerClosed, memory_websocket

from notifykit import Hub
from notifykit.gateway import Gateway
from notifykit.memory import MemoryBus, MemoryPropagator
from notifykit.model import Handshake, Principal
from notifykit.wire import CloseCode, Notification, Position, Subscribed, Welcome

pytestmark = pytest.mark.anyio


class TokenIsUser:
    """The token is the user id (these tests are about resume, not authentication); every
    user may subscribe to any topic."""

    async def authenticate(self, token: str) -> Principal:
        await anyio.lowlevel.checkpoint()
        return Principal(token, {"topics": ["*"]})


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    async with Hub() as running:
        yield running


@asynccontextmanager
async def connect(
    gateway: Gateway, user: str, resume: Mapping[str, Position] | None = None
) -> AsyncIterator[MemoryClient]:
    query = {}
    if resume is not None:
        query["resume"] = json.dumps(
            {s: {"epoch": p.epoch, "offset": p.offset} for s, p in resume.items()}
        )
    client, transport = memory_websocket()
    handshake = Handshake(headers={"authorization": f"Bearer {user}"}, query=query)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(gateway.serve, transport, handshake)
        try:
            yield client
        finally:
            client.disconnect()


async def welcome(client: MemoryClient) -> Welcome:
    frame = await client.recv()
    assert isinstance(frame, Welcome), frame
    return frame


async def notifications(client: MemoryClient, count: int) -> list[Notification]:
    frames = [await client.recv() for _ in range(count)]
    assert all(isinstance(f, Notification) for f in frames), frames
    return frames  # type: ignore[return-value]


class Book:
    """What a client keeps: the last position of each stream it received from."""

    def __init__(self) -> None:
        self.positions: dict[str, Position] = {}

    def welcomed(self, frame: Welcome) -> None:
        for stream, position in frame.positions.items():
            mine = self.positions.get(stream)
            if not (frame.recovered and mine and mine.epoch == position.epoch):
                self.positions[stream] = position

    def took(self, frame: Notification) -> None:
        assert frame.stream is not None
        assert frame.offset is not None
        assert frame.epoch is not None
        mine = self.positions.get(frame.stream)
        if mine is not None and mine.epoch == frame.epoch:
            assert frame.offset == mine.offset + 1, f"gap or duplicate on {frame.stream}"
        self.positions[frame.stream] = Position(frame.epoch, frame.offset)


# --- positions --------------------------------------------------------------------------------


async def test_the_welcome_gives_a_position_for_each_stream_the_connection_receives(
    hub: Hub,
) -> None:
    await hub.notify_user("42", "before")
    async with connect(Gateway(hub, TokenIsUser()), "42") as client:
        greeting = await welcome(client)
        assert set(greeting.positions) == {"u:42", "auth", "all"}
        assert greeting.positions["u:42"].offset == 1
        assert greeting.recovered is None
        sent = await hub.notify_user("42", "after")
        [note] = await notifications(client, 1)
        assert (note.id, note.stream, note.offset) == (sent, "u:42", 2)
        assert note.epoch == greeting.positions["u:42"].epoch


async def test_a_topic_subscription_gives_the_topic_stream_position(hub: Hub) -> None:
    await hub.notify_topic("news", "old")
    async with connect(Gateway(hub, TokenIsUser()), "42") as client:
        await welcome(client)
        await client.send_json({"type": "subscribe", "topic": "news"})
        reply = await client.recv()
        assert isinstance(reply, Subscribed)
        assert reply.position is not None
        assert reply.position.offset == 1
        assert reply.recovered is None
        await hub.notify_topic("news", "new")
        [note] = await notifications(client, 1)
        assert (note.topic, note.stream, note.offset) == ("news", "t:news", 2)


# --- resume -----------------------------------------------------------------------------------


async def test_a_resuming_client_gets_what_it_missed_in_order_then_live(hub: Hub) -> None:
    await missed_then_live(hub)


async def missed_then_live(hub: Hub) -> None:
    """A client resumes: what it missed on two streams, in order, then live (any backend)."""
    gateway = Gateway(hub, TokenIsUser())
    book = Book()
    async with connect(gateway, "42") as client:
        book.welcomed(await welcome(client))
        for n in range(3):
            await hub.notify_user("42", "seen", n)
        for note in await notifications(client, 3):
            book.took(note)
    missed = [await hub.notify_user("42", "missed", n) for n in range(4)]
    broadcast = await hub.broadcast("to everyone")
    async with connect(gateway, "42", book.positions) as client:
        greeting = await welcome(client)
        assert greeting.recovered is True
        book.welcomed(greeting)
        replayed = await notifications(client, 5)
        for note in replayed:
            book.took(note)
        assert [n.id for n in replayed if n.stream == "u:42"] == missed
        assert [n.id for n in replayed if n.stream == "all"] == [broadcast]
        live = await hub.notify_user("42", "live")
        [note] = await notifications(client, 1)
        book.took(note)
        assert note.id == live


async def test_a_resume_from_another_epoch_is_not_recovered_and_replays_nothing(
    hub: Hub,
) -> None:
    await another_epoch_not_recovered(hub)


async def another_epoch_not_recovered(hub: Hub) -> None:
    """A position of another epoch is not recovered, and nothing is replayed (any backend)."""
    await hub.notify_user("42", "something")
    stale = {"u:42": Position("gone0000", 1)}
    async with connect(Gateway(hub, TokenIsUser()), "42", stale) as client:
        greeting = await welcome(client)
        assert greeting.recovered is False
        assert greeting.positions["u:42"].epoch != "gone0000"
        sentinel = await hub.notify_user("42", "sentinel")
        [note] = await notifications(client, 1)
        assert note.id == sentinel  # nothing was replayed before it


async def test_a_resume_beyond_retention_is_not_recovered() -> None:
    async with Hub(MemoryPropagator(history_size=3)) as small:
        await beyond_retention_not_recovered(small)


async def beyond_retention_not_recovered(small: Hub) -> None:
    """With 3 entries kept, a client 5 behind is not recovered (any backend)."""
    gateway = Gateway(small, TokenIsUser())
    async with connect(gateway, "42") as client:
        position = (await welcome(client)).positions["u:42"]
    for n in range(5):
        await small.notify_user("42", "overflow", n)
    async with connect(gateway, "42", {"u:42": position}) as client:
        assert (await welcome(client)).recovered is False


async def test_resume_never_replays_another_users_stream(hub: Hub) -> None:
    gateway = Gateway(hub, TokenIsUser())
    async with connect(gateway, "7") as victim:
        theirs = (await welcome(victim)).positions["u:7"]
    await hub.notify_user("7", "private")
    async with connect(gateway, "42", {"u:7": theirs}) as attacker:
        greeting = await welcome(attacker)
        assert "u:7" not in greeting.positions
        sentinel = await hub.notify_user("42", "sentinel")
        [note] = await notifications(attacker, 1)
        assert note.id == sentinel


async def test_a_topic_subscribe_since_replays_what_was_missed(hub: Hub) -> None:
    await topic_since_replays(hub)


async def topic_since_replays(hub: Hub) -> None:
    """``subscribe`` with ``since`` replays what the topic had meanwhile (any backend)."""
    gateway = Gateway(hub, TokenIsUser())
    async with connect(gateway, "42") as client:
        await welcome(client)
        await client.send_json({"type": "subscribe", "topic": "news"})
        reply = await client.recv()
        assert isinstance(reply, Subscribed)
        assert reply.position is not None
        since = reply.position
    missed = [await hub.notify_topic("news", "missed", n) for n in range(3)]
    async with connect(gateway, "42") as client:
        await welcome(client)
        since_json = {"epoch": since.epoch, "offset": since.offset}
        await client.send_json({"type": "subscribe", "topic": "news", "since": since_json})
        reply = await client.recv()
        assert isinstance(reply, Subscribed)
        assert reply.recovered is True
        assert [n.id for n in await notifications(client, 3)] == missed


async def test_an_invalid_resume_is_refused_with_4400_saying_why(hub: Hub) -> None:
    client, transport = memory_websocket()
    handshake = Handshake(headers={"authorization": "Bearer 42"}, query={"resume": "{nope"})
    await Gateway(hub, TokenIsUser()).serve(transport, handshake)
    code, reason = await client.closed()
    assert code == CloseCode.BAD_FRAME
    assert "resume" in reason


async def test_without_history_positions_are_empty_and_a_resume_is_not_recovered() -> None:
    async with Hub(MemoryPropagator(history_size=0)) as plain:
        gateway = Gateway(plain, TokenIsUser())
        async with connect(gateway, "42", {"u:42": Position("ab", 1)}) as client:
            greeting = await welcome(client)
            assert greeting.positions == {}
            assert greeting.recovered is False
            sent = await plain.notify_user("42", "live")
            [note] = await notifications(client, 1)
            assert (note.id, note.stream, note.offset) == (sent, None, None)


async def read_until_closed(client: MemoryClient, into: list[Notification]) -> None:
    """Read notifications into ``into`` until the server closes (ServerClosed)."""
    while True:
        frame = await client.recv()
        assert isinstance(frame, Notification)
        into.append(frame)


async def test_a_slow_consumer_closed_4008_resumes_and_gets_what_it_was_dropped(hub: Hub) -> None:
    gateway = Gateway(hub, TokenIsUser(), queue_size=4)
    client, transport = memory_websocket(read_buffer=3)  # it reads nothing after its welcome
    handshake = Handshake(headers={"authorization": "Bearer 42"})
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(gateway.serve, transport, handshake)
        position = (await welcome(client)).positions["u:42"]
        sent = [await hub.notify_user("42", "tick", n) for n in range(20)]
        received: list[Notification] = []
        with pytest.raises(ServerClosed) as closed:
            await read_until_closed(client, received)
        assert closed.value.code == CloseCode.SLOW_CONSUMER
    assert 0 < len(received) < len(sent)  # the queue overflowed: some were dropped
    last = received[-1]
    assert last.offset is not None
    assert last.epoch == position.epoch
    async with connect(gateway, "42", {"u:42": Position(position.epoch, last.offset)}) as again:
        assert (await welcome(again)).recovered is True
        replayed = await notifications(again, len(sent) - len(received))
    assert [n.id for n in received + replayed] == sent


# --- the switch from history to live, under load ----------------------------------------------


async def test_resuming_while_notifications_keep_coming_loses_and_repeats_nothing() -> None:
    bus = MemoryBus(history_size=10_000)
    async with Hub(MemoryPropagator(bus)) as publisher, Hub(MemoryPropagator(bus)) as server:
        await resume_under_load(publisher, server, total=600, clients=4, rounds=8)


async def resume_under_load(
    publisher: Hub, server: Hub, *, total: int, clients: int, rounds: int
) -> None:
    """Two instances: one publishes without pause, the other serves clients that disconnect
    and resume again and again. Every client must see one unbroken sequence (any backend;
    history must keep ``total`` entries)."""
    sent: list[str] = []
    done = anyio.Event()
    gateway = Gateway(server, TokenIsUser(), queue_size=10_000)

    async def publish_all() -> None:
        for n in range(total):
            sent.append(await publisher.notify_user("42", "tick", n))
            if n % 7 == 0:
                await anyio.lowlevel.checkpoint()
        done.set()

    async def follow(seen: list[str]) -> None:
        book = Book()
        for _ in range(rounds):
            resume = dict(book.positions) if book.positions else None
            async with connect(gateway, "42", resume) as client:
                greeting = await welcome(client)
                assert greeting.recovered in (None, True)
                book.welcomed(greeting)
                for _ in range(total // rounds // 2):
                    frame = await client.recv()
                    assert isinstance(frame, Notification)
                    book.took(frame)
                    seen.append(frame.id)
        await done.wait()
        async with connect(gateway, "42", book.positions) as client:
            book.welcomed(await welcome(client))
            while not seen or seen[-1] != sent[-1]:
                frame = await client.recv()
                assert isinstance(frame, Notification)
                book.took(frame)
                seen.append(frame.id)

    seen_by: list[list[str]] = [[] for _ in range(clients)]
    with anyio.fail_after(45):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(publish_all)
            for seen in seen_by:
                tasks.start_soon(follow, seen)
    for seen in seen_by:
        first = sent.index(seen[0])
        assert seen == sent[first:]
