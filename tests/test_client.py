"""The Python client (``notifykit.client``) against a real ``notifykit serve`` in a subprocess.

It receives, subscribes, refreshes its token through the factory, gets a new token after 4001,
stops for good on 4003 (and on 4001 with a fixed token), reconnects and resubscribes after a
server restart, and backs off while the server is down. Absence is proven with a broadcast
sentinel: delivery to one connection is in publish order.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator

import anyio
import pytest
from servers import RedisServer
from servers_e2e import (
    API_KEY,
    OTHER_SECRET,
    SECRET,
    Server,
    client,
    free_port,
    log_on_failure,
    publish,
    start_serve,
    token,
    welcome,
)

from notifykit.client import (
    Backoff,
    ClientClosed,
    ConnectionState,
    NotifyClient,
    Position,
    RequestRefused,
    StateChange,
)
from notifykit.wire import Notification

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

ALLOWED_ORIGIN = "https://app.example"
FAST = Backoff(initial=0.05, maximum=0.4)
"""Backoff for tests: quick, but never zero."""
WAIT = 10.0

CONNECTING, OPEN, CLOSED = ConnectionState.CONNECTING, ConnectionState.OPEN, ConnectionState.CLOSED
RECONNECTING, STOPPED = ConnectionState.RECONNECTING, ConnectionState.STOPPED


def serve_flags() -> list[str]:
    return ["--jwt-secret", SECRET, "--api-key", API_KEY, "--allow-origin", ALLOWED_ORIGIN]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = start_serve(*serve_flags())
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _server_log(request: pytest.FixtureRequest, server: Server) -> Iterator[None]:
    with log_on_failure(request, server):
        yield


class States:
    """Records a client's state changes (pass as ``on_state``) and waits for them."""

    def __init__(self) -> None:
        self.changes: list[StateChange] = []
        self._changed = asyncio.Event()

    def __call__(self, change: StateChange) -> None:
        self.changes.append(change)
        self._changed.set()

    @property
    def states(self) -> list[ConnectionState]:
        return [c.state for c in self.changes]

    def count(self, state: ConnectionState) -> int:
        return self.states.count(state)

    async def wait_for(self, done: Callable[[], bool], within: float = WAIT) -> None:
        with anyio.fail_after(within):
            while not done():
                self._changed.clear()
                await self._changed.wait()


class Tokens:
    """A token factory that counts its calls; ``first`` replaces the first token."""

    def __init__(self, user: str, *, ttl: float = 600, first: str | None = None, **claims: object):
        self.user, self.ttl, self.first, self.claims = user, ttl, first, claims
        self.calls = 0
        self._called = asyncio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        self._called.set()
        if self.calls == 1 and self.first is not None:
            return self.first
        return token(self.user, ttl=self.ttl, **self.claims)

    async def wait_calls(self, n: int, within: float = WAIT) -> None:
        with anyio.fail_after(within):
            while self.calls < n:
                self._called.clear()
                await self._called.wait()


async def next_notification(client: NotifyClient, within: float = WAIT) -> Notification:
    with anyio.fail_after(within):
        return await anext(client)


async def sentinel(server: Server, *clients: NotifyClient) -> None:
    """Broadcast a sentinel; it must be the next notification of every client."""
    sentinel_id = await publish(server, {"event": "sentinel", "broadcast": True})
    for each in clients:
        n = await next_notification(each)
        assert (n.event, n.id) == ("sentinel", sentinel_id), n


@pytest.fixture
async def alice(server: Server) -> AsyncIterator[NotifyClient]:
    async with NotifyClient(
        server.ws_url + "/ws", token_factory=Tokens("alice", topics=["team:*"]), backoff=FAST
    ) as client:
        await client.wait_open()
        yield client


# --- receiving ----------------------------------------------------------------------------


async def test_it_receives_what_is_sent_to_its_user_and_to_everyone(
    server: Server, alice: NotifyClient
) -> None:
    assert alice.user == "alice"
    to_alice = await publish(server, {"event": "order.shipped", "data": {"n": 7}, "user": "alice"})
    await publish(server, {"event": "secret", "user": "bob"})
    n = await next_notification(alice)
    assert n == Notification(
        to_alice, "order.shipped", {"n": 7}, n.ts, None, "u:alice", n.offset, n.epoch
    )
    await sentinel(server, alice)  # not bob's


async def test_a_fixed_token_works_too(server: Server) -> None:
    async with NotifyClient(server.ws_url + "/ws", token=token("bob")) as bob:
        await bob.wait_open()
        sent = await publish(server, {"event": "hi", "user": "bob"})
        assert (await next_notification(bob)).id == sent


async def test_iteration_ends_when_the_client_is_closed(server: Server) -> None:
    client = NotifyClient(server.ws_url + "/ws", token=token("carol"))
    async with client:
        await client.wait_open()
    with anyio.fail_after(WAIT):
        assert [n async for n in client] == []


# --- topics -------------------------------------------------------------------------------


async def test_subscribe_returns_once_the_server_agreed_and_topic_notifications_follow(
    server: Server, alice: NotifyClient
) -> None:
    await alice.subscribe("team:7")
    assert alice.topics == {"team:7"}
    sent = await publish(server, {"event": "chat", "data": "hi", "topic": "team:7"})
    n = await next_notification(alice)
    assert (n.id, n.topic) == (sent, "team:7")

    await alice.unsubscribe("team:7")
    assert alice.topics == frozenset()
    await publish(server, {"event": "chat", "topic": "team:7"})
    await sentinel(server, alice)


async def test_a_refused_subscribe_raises_with_the_servers_code_and_is_not_kept(
    alice: NotifyClient,
) -> None:
    with pytest.raises(RequestRefused) as refused:
        await alice.subscribe("ops:1")  # the token allows team:* only
    assert refused.value.code == "forbidden"
    with pytest.raises(RequestRefused) as invalid:
        await alice.subscribe("bad topic")
    assert invalid.value.code == "invalid_topic"
    assert alice.topics == frozenset()


async def test_topics_given_up_front_are_subscribed_before_the_client_is_open(
    server: Server,
) -> None:
    async with NotifyClient(
        server.ws_url + "/ws", token=token("dave", topics=["team:*"]), topics=["team:9"]
    ) as dave:
        await dave.wait_open()
        sent = await publish(server, {"event": "chat", "topic": "team:9"})
        assert (await next_notification(dave)).id == sent


# --- tokens -------------------------------------------------------------------------------


async def test_it_refreshes_its_token_through_the_factory_before_it_expires(
    server: Server,
) -> None:
    tokens = Tokens("erin", ttl=3)
    states = States()
    async with NotifyClient(
        server.ws_url + "/ws", token_factory=tokens, on_state=states, backoff=FAST
    ) as erin:
        await erin.wait_open()
        connection, first_expiry = erin.connection_id, erin.expires_at
        assert first_expiry is not None
        # The second refresh starts over a second after the first token expired (at 80% of the
        # first refresh's lifetime): the connection outlived its first token.
        await tokens.wait_calls(3)
        assert time.time() > first_expiry
        assert (erin.expires_at or 0) > first_expiry
        sent = await publish(server, {"event": "still.here", "user": "erin"})
        assert (await next_notification(erin)).id == sent
        assert erin.connection_id == connection
        assert states.count(CLOSED) == 0


async def test_after_4001_it_connects_again_with_a_new_token_from_the_factory(
    server: Server,
) -> None:
    tokens = Tokens("frank", first=token("frank", secret=OTHER_SECRET))
    states = States()
    async with NotifyClient(
        server.ws_url + "/ws", token_factory=tokens, on_state=states, backoff=FAST
    ) as frank:
        await frank.wait_open()
        assert tokens.calls == 2
        closed = states.changes[1]
        assert (closed.state, closed.code) == (CLOSED, 4001)
        assert closed.reason == "token signature is invalid"
        assert states.states == [CONNECTING, CLOSED, RECONNECTING, CONNECTING, OPEN]
        sent = await publish(server, {"event": "welcome.back", "user": "frank"})
        assert (await next_notification(frank)).id == sent


async def test_after_4001_with_a_fixed_token_it_stops(server: Server) -> None:
    states = States()
    bad = token("gus", secret=OTHER_SECRET)
    client = NotifyClient(server.ws_url + "/ws", token=bad, on_state=states)
    async with client:
        with pytest.raises(ClientClosed) as stopped:
            await next_notification(client)
        assert (stopped.value.code, stopped.value.reason) == (4001, "token signature is invalid")
        assert states.states == [CONNECTING, CLOSED, STOPPED]
        with pytest.raises(ClientClosed):
            await client.subscribe("team:1")


async def test_4003_stops_it_for_good(server: Server) -> None:
    tokens = Tokens("hana")
    states = States()
    client = NotifyClient(
        server.ws_url + "/ws",
        token_factory=tokens,
        origin="https://evil.example",
        on_state=states,
        backoff=FAST,
    )
    async with client:
        with pytest.raises(ClientClosed) as stopped:
            await next_notification(client)
        assert stopped.value.code == 4003
        assert states.states == [CONNECTING, CLOSED, STOPPED]
        assert states.changes[-1].code == 4003
        assert tokens.calls == 1
        with pytest.raises(ClientClosed):
            await client.wait_open()


# --- states -------------------------------------------------------------------------------


async def test_state_changes_of_a_connection_opened_then_closed(server: Server) -> None:
    states = States()
    client = NotifyClient(server.ws_url + "/ws", token=token("ivan"), on_state=states)
    seen: list[ConnectionState] = []

    async def watch() -> None:
        async for change in client.state_changes():
            seen.append(change.state)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await anyio.wait_all_tasks_blocked()
        async with client:
            await client.wait_open()
            assert client.state.state is OPEN
    assert states.states == [CONNECTING, OPEN, CLOSED, STOPPED]
    assert [(c.code, c.reason) for c in states.changes[2:]] == [
        (1000, ""),
        (1000, "closed by the client"),
    ]
    assert seen == states.states
    assert states.changes[1].recovered is None  # today's server does not resume


# --- restarts and outages -----------------------------------------------------------------


async def test_it_reconnects_and_resubscribes_after_the_server_restarts(
    request: pytest.FixtureRequest,
) -> None:
    first = start_serve(*serve_flags())
    states = States()
    try:
        async with NotifyClient(
            first.ws_url + "/ws",
            token_factory=Tokens("jo", topics=["team:*"]),
            topics=["team:1"],
            on_state=states,
            backoff=FAST,
        ) as jo:
            await jo.wait_open()
            await jo.subscribe("team:2")
            before = jo.connection_id
            first.stop(signal.SIGTERM)
            await states.wait_for(lambda: states.count(CLOSED) >= 1)
            assert states.changes[states.states.index(CLOSED)].code == 1001  # going away
            second = start_serve(*serve_flags(), port=first.port)
            with log_on_failure(request, second):
                try:
                    await states.wait_for(lambda: states.count(OPEN) == 2)
                    assert jo.connection_id != before
                    assert jo.topics == {"team:1", "team:2"}
                    for topic in ("team:1", "team:2"):
                        sent = await publish(second, {"event": "chat", "topic": topic})
                        assert (await next_notification(jo)).id == sent
                finally:
                    second.stop()
    finally:
        first.stop()


async def test_while_the_server_is_down_it_backs_off_and_never_busy_spins() -> None:
    backoff = Backoff(initial=0.1, maximum=0.4)
    states = States()
    url = f"ws://127.0.0.1:{free_port()}/ws"  # nothing listens there
    started = time.monotonic()
    async with NotifyClient(url, token=token("kim"), on_state=states, backoff=backoff):
        await states.wait_for(lambda: states.count(CONNECTING) >= 7, within=30)
        elapsed = time.monotonic() - started
    waits = [c for c in states.changes if c.state is RECONNECTING][:6]
    for n, wait in enumerate(waits):
        assert wait.attempt == n + 1
        assert wait.delay is not None
        assert backoff.ceiling(n) / 2 <= wait.delay <= backoff.ceiling(n) <= backoff.maximum
    # Seven attempts took at least the six waits between them: the client really waited.
    assert elapsed >= sum(w.delay or 0 for w in waits)
    refused = [c for c in states.changes if c.state is CLOSED]
    assert all(c.code == 1006 and isinstance(c.error, OSError) for c in refused)


# --- positions ----------------------------------------------------------------------------


async def test_without_stream_positions_from_the_server_nothing_is_resumed_and_nothing_breaks(
    server: Server,
) -> None:
    """Until the server numbers its streams, a client keeps no positions; positions it was
    seeded with go out as ``resume`` and today's server ignores them."""
    seeded = {"user:lee": Position("e1", 3)}
    async with NotifyClient(server.ws_url + "/ws", token=token("lee"), positions=seeded) as lee:
        await lee.wait_open()
        sent = await publish(server, {"event": "hi", "user": "lee"})
        assert (await next_notification(lee)).id == sent
        if "positions" not in await _welcome_fields(server):
            assert lee.positions == seeded  # nothing replaced them
            assert lee.state.recovered is None


@pytest.mark.redis
async def test_after_its_server_restarts_it_resumes_what_was_sent_meanwhile(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> None:
    """Two instances on one Redis: the client's instance goes down, a notification for its user
    is published through the other, the instance comes back. Once the server numbers its
    streams (``welcome`` carries ``positions``) the client resumes and receives it, exactly
    once; until then it reconnects and goes on live."""
    flags = [*serve_flags(), "--redis-url", redis_server.url]
    hers, other = start_serve(*flags), start_serve(*flags)
    states = States()
    try:
        async with NotifyClient(
            hers.ws_url + "/ws", token_factory=Tokens("mo"), on_state=states, backoff=FAST
        ) as mo:
            await mo.wait_open()
            resumes = bool(mo.positions)
            hers.stop(signal.SIGTERM)
            await states.wait_for(lambda: states.count(CLOSED) >= 1)
            missed = await publish(other, {"event": "while.away", "user": "mo"})
            hers = start_serve(*flags, port=hers.port)
            with log_on_failure(request, hers, other):
                await states.wait_for(lambda: states.count(OPEN) == 2)
                if resumes:
                    assert mo.state.recovered is True
                    assert (await next_notification(mo)).id == missed
                else:
                    assert mo.state.recovered is None
                live = await publish(other, {"event": "live", "user": "mo"})
                assert (await next_notification(mo)).id == live
    finally:
        hers.stop()
        other.stop()


async def _welcome_fields(server: Server) -> set[str]:
    """The fields of the server's ``welcome`` frame (to see whether it numbers streams)."""
    async with client(server, token("probe")) as ws:
        return set(await welcome(ws))
