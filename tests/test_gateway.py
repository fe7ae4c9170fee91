"""The gateway, driven through an in-memory websocket (tests/memory_transport.py).

Every connection runs ``Gateway.serve`` in a task group, as an adapter would; every wait is
bounded. Absence is proved with a sentinel: a connection's frames arrive in order, so when the
next frame is a notification published *after* the one that must not arrive, it did not.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import jwt
import pytest
from memory_transport import MemoryClient, MemoryTransport, ServerClosed, memory_websocket

from notifykit import (
    SUBPROTOCOL,
    CloseCode,
    Hub,
    JWTAuthenticator,
    Principal,
    PropagationError,
    mint_token,
)
from notifykit.gateway import Gateway
from notifykit.memory import MemoryPropagator
from notifykit.model import Handshake
from notifykit.protocols import Transport
from notifykit.wire import (
    Error,
    Notification,
    Pong,
    Refreshed,
    ServerFrame,
    Subscribed,
    Unsubscribed,
    Welcome,
)

pytestmark = pytest.mark.anyio


class subscribed:
    """Equal to a ``subscribed`` frame for ``topic`` and ``ref``, whatever its position."""

    def __init__(self, topic: str, ref: str | None = None) -> None:
        self.topic, self.ref = topic, ref

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Subscribed) and (other.topic, other.ref) == (self.topic, self.ref)

    def __repr__(self) -> str:
        return f"subscribed({self.topic!r}, {self.ref!r})"


SECRET = "gateway-tests-secret-0123456789abcdef"
AUTH = JWTAuthenticator(secret=SECRET)
SERVE_TIMEOUT = 10.0  # seconds one serve() may run in these tests


def token(user: str = "42", *, ttl: float = 60, **claims: Any) -> str:
    """A valid token for ``user``, with extra claims (e.g. ``topics=["team:*"]``)."""
    return mint_token(user, secret=SECRET, ttl=ttl, claims=claims or None)


def expired_token(user: str = "42") -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now - 120, "exp": now - 60}, SECRET, "HS256")


async def expiry_of(signed: str) -> float:
    expires_at = (await AUTH.authenticate(signed)).expires_at
    assert expires_at is not None
    return expires_at


def handshake(
    signed: str | None = None,
    *,
    origin: str | None = None,
    subprotocols: Sequence[str] = (SUBPROTOCOL,),
) -> Handshake:
    """What a client sends when opening the websocket (token in the Authorization header)."""
    headers = {} if signed is None else {"authorization": f"Bearer {signed}"}
    if origin is not None:
        headers["origin"] = origin
    return Handshake(headers=headers, subprotocols=tuple(subprotocols))


async def serve(gateway: Gateway, transport: MemoryTransport, hs: Handshake) -> None:
    with anyio.fail_after(SERVE_TIMEOUT):
        await gateway.serve(transport, hs)


@asynccontextmanager
async def connect(
    gateway: Gateway, hs: Handshake, *, read_buffer: int = 10_000
) -> AsyncIterator[MemoryClient]:
    """Serve one in-memory websocket; on exit the client disconnects and serve() must return."""
    client, transport = memory_websocket(read_buffer=read_buffer)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(serve, gateway, transport, hs)
        try:
            yield client
        finally:
            client.disconnect()


async def welcome(client: MemoryClient) -> Welcome:
    frame = await client.recv()
    assert isinstance(frame, Welcome), f"expected welcome first, got {frame!r}"
    return frame


async def next_notification(client: MemoryClient) -> Notification:
    frame = await client.recv()
    assert isinstance(frame, Notification), f"expected a notification, got {frame!r}"
    return frame


async def read_until_closed(client: MemoryClient, kind: type = object) -> list[Any]:
    """Every frame still to read before the close (each must be a ``kind``)."""
    frames: list[Any] = []
    while True:
        try:
            frame = await client.recv()
        except ServerClosed:
            return frames
        assert isinstance(frame, kind), f"expected {kind.__name__}, got {frame!r}"
        frames.append(frame)


async def request(client: MemoryClient, **frame: Any) -> ServerFrame:
    """Send one client frame and return the server's next frame."""
    await client.send_json(frame)
    return await client.recv()


def assert_no_state(hub: Hub) -> None:
    assert hub.state.connection_count == 0
    assert hub.state.user_count == 0
    assert list(hub.state.keys()) == []
    assert hub.propagator.statistics()["subscriptions"] == 0


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    async with Hub() as running:
        yield running


@pytest.fixture
def gateway(hub: Hub) -> Gateway:
    return Gateway(hub, AUTH)


# --- welcome and handshake ------------------------------------------------------------------


async def test_the_memory_transport_implements_the_transport_protocol() -> None:
    _, transport = memory_websocket()
    assert isinstance(transport, Transport)


async def test_welcome_is_the_first_frame_with_connection_id_user_and_expiry(
    hub: Hub, gateway: Gateway
) -> None:
    signed = token("42")
    async with connect(gateway, handshake(signed)) as client:
        frame = await welcome(client)
        (connection,) = hub.local_connections("42")
        assert frame.connection_id == connection.id
        assert frame.user == "42"
        assert frame.expires_at == int(await expiry_of(signed))
        assert client.subprotocol == SUBPROTOCOL


async def test_the_welcome_precedes_a_notification_published_while_registering() -> None:
    class NotifiesWhileSubscribing(MemoryPropagator):
        hub: Hub | None = None

        async def subscribe(self, keys: Collection[str]) -> None:
            await super().subscribe(keys)
            if self.hub is not None and "u:42" in keys:
                await self.hub.notify_user("42", "early")

    propagator = NotifiesWhileSubscribing()
    async with Hub(propagator) as hub:
        propagator.hub = hub
        async with connect(Gateway(hub, AUTH), handshake(token("42"))) as client:
            await welcome(client)
            assert (await next_notification(client)).event == "early"


async def test_the_subprotocol_is_selected_only_when_the_client_offers_it(
    gateway: Gateway,
) -> None:
    async with connect(gateway, handshake(token(), subprotocols=())) as client:
        await welcome(client)
        assert client.subprotocol is None


@pytest.mark.parametrize(
    "make_handshake",
    [
        pytest.param(lambda t: Handshake(headers={"authorization": f"Bearer {t}"}), id="header"),
        pytest.param(
            lambda t: Handshake(subprotocols=(SUBPROTOCOL, f"bearer.{t}")), id="subprotocol"
        ),
        pytest.param(lambda t: Handshake(query={"token": t}), id="query"),
    ],
)
async def test_a_token_is_accepted_from_each_documented_source(
    gateway: Gateway, make_handshake: Any
) -> None:
    signed = token("7")
    async with connect(gateway, make_handshake(signed)) as client:
        assert (await welcome(client)).user == "7"
        # The bearer entry is never selected as the subprotocol; notifykit.v1 is, if offered.
        assert client.subprotocol in (None, SUBPROTOCOL)


@pytest.mark.parametrize(
    ("signed", "reason_contains"),
    [
        pytest.param(None, "no token", id="no-token"),
        pytest.param("not-a-jwt", "not a valid JWT", id="garbage"),
        pytest.param(expired_token(), "expired", id="expired"),
        pytest.param(
            mint_token("42", secret="another-secret-0123456789abcdefghij"),
            "signature",
            id="wrong-key",
        ),
    ],
)
async def test_a_refused_client_is_accepted_then_closed_4001_without_a_welcome(
    hub: Hub, gateway: Gateway, signed: str | None, reason_contains: str
) -> None:
    async with connect(gateway, handshake(signed)) as client:
        code, reason = await client.closed()
        assert code == CloseCode.UNAUTHORIZED
        assert reason_contains in reason
        assert client.history == ["accept", "close"]
        assert client.subprotocol == SUBPROTOCOL
        with pytest.raises(ServerClosed):
            await client.recv()
    assert hub.metrics["auth_failures"] == 1
    assert hub.metrics["connections_opened"] == 0
    assert_no_state(hub)


async def test_a_hub_that_is_not_running_refuses_with_1013() -> None:
    hub = Hub()
    async with connect(Gateway(hub, AUTH), handshake(token())) as client:
        assert (await client.closed())[0] == CloseCode.TRY_AGAIN_LATER
        assert client.history == ["accept", "close"]


async def test_a_connection_that_cannot_be_registered_is_closed_1013_without_a_welcome() -> None:
    class Unreachable(MemoryPropagator):
        async def subscribe(self, keys: Collection[str]) -> None:
            raise PropagationError("backend unreachable")

    async with Hub(Unreachable()) as hub:
        async with connect(Gateway(hub, AUTH), handshake(token())) as client:
            code, reason = await client.closed()
            assert code == CloseCode.TRY_AGAIN_LATER
            assert "retry" in reason
            assert client.history == ["accept", "close"]
        assert_no_state(hub)


# --- anonymous connections ----------------------------------------------------------------


async def test_anonymous_clients_are_refused_by_default(gateway: Gateway) -> None:
    async with connect(gateway, handshake(None)) as client:
        assert (await client.closed())[0] == CloseCode.UNAUTHORIZED


async def test_an_anonymous_client_if_enabled_receives_broadcasts_only(hub: Hub) -> None:
    gateway = Gateway(hub, AUTH, allow_anonymous=True, topic_policy=lambda p, t: True)
    async with (
        connect(gateway, handshake(None)) as anonymous,
        connect(gateway, handshake(token("42"))) as user,
    ):
        assert (await welcome(anonymous)).user is None
        await welcome(user)
        refused = await request(anonymous, type="subscribe", topic="news")
        assert isinstance(refused, Error)
        assert refused.code == "forbidden"
        assert (await request(user, type="subscribe", topic="news")) == subscribed("news")

        await hub.notify_authenticated("for-authenticated")
        await hub.notify_topic("news", "for-topic")
        await hub.broadcast("for-everyone")

        assert (await next_notification(anonymous)).event == "for-everyone"
        assert [(await next_notification(user)).event for _ in range(3)] == [
            "for-authenticated",
            "for-topic",
            "for-everyone",
        ]
        refused = await request(anonymous, type="refresh", token=token("42"))
        assert isinstance(refused, Error)
        assert refused.code == "forbidden"


# --- origin check ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example", True),
        ("HTTPS://APP.EXAMPLE/", True),
        (None, True),
        ("https://evil.example", False),
        ("https://app.example.evil.example", False),
    ],
)
async def test_the_origin_allow_list_refuses_other_browser_origins_with_4003(
    hub: Hub, origin: str | None, allowed: bool
) -> None:
    gateway = Gateway(hub, AUTH, allowed_origins=["https://app.example"])
    async with connect(gateway, handshake(token(), origin=origin)) as client:
        if allowed:
            await welcome(client)
        else:
            code, reason = await client.closed()
            assert (code, reason) == (CloseCode.FORBIDDEN, "origin not allowed")
            assert client.history == ["accept", "close"]


async def test_an_empty_origin_allow_list_checks_nothing(gateway: Gateway) -> None:
    async with connect(gateway, handshake(token(), origin="https://anywhere.example")) as client:
        await welcome(client)


# --- ping -----------------------------------------------------------------------------------


async def test_ping_is_answered_with_pong_carrying_the_same_ref(gateway: Gateway) -> None:
    async with connect(gateway, handshake(token())) as client:
        await welcome(client)
        assert await request(client, type="ping", ref="r-1") == Pong("r-1")
        assert await request(client, type="ping") == Pong(None)


# --- topics ---------------------------------------------------------------------------------


async def test_a_topic_allowed_by_a_claim_wildcard_is_subscribed_and_then_delivered(
    hub: Hub, gateway: Gateway
) -> None:
    async with connect(gateway, handshake(token(topics=["team:7:*"]))) as client:
        await welcome(client)
        reply = await request(client, type="subscribe", topic="team:7:chat", ref="s1")
        assert reply == subscribed("team:7:chat", "s1")
        sent = await hub.notify_topic("team:7:chat", "message.posted", {"text": "hi"})
        note = await next_notification(client)
        assert (note.id, note.event, note.data, note.topic) == (
            sent,
            "message.posted",
            {"text": "hi"},
            "team:7:chat",
        )


async def test_a_topic_the_policy_refuses_gets_forbidden_and_is_not_delivered(
    hub: Hub, gateway: Gateway
) -> None:
    async with connect(gateway, handshake(token("42", topics=["team:7:*"]))) as client:
        await welcome(client)
        reply = await request(client, type="subscribe", topic="team:8:chat", ref="s1")
        assert isinstance(reply, Error)
        assert (reply.code, reply.ref) == ("forbidden", "s1")
        await hub.notify_topic("team:8:chat", "leak")
        await hub.notify_user("42", "sentinel")
        assert (await next_notification(client)).event == "sentinel"


async def test_a_token_without_a_topics_claim_may_subscribe_to_nothing(gateway: Gateway) -> None:
    async with connect(gateway, handshake(token())) as client:
        await welcome(client)
        reply = await request(client, type="subscribe", topic="news")
        assert isinstance(reply, Error)
        assert reply.code == "forbidden"


@pytest.mark.parametrize("topic", ["has space", "star*", "ümlaut", "a,b"])
async def test_an_invalid_topic_name_gets_invalid_topic(gateway: Gateway, topic: str) -> None:
    async with connect(gateway, handshake(token(topics=["*"]))) as client:
        await welcome(client)
        reply = await request(client, type="subscribe", topic=topic, ref="s")
        assert isinstance(reply, Error)
        assert (reply.code, reply.ref) == ("invalid_topic", "s")


async def test_subscribing_past_max_topics_is_forbidden(hub: Hub) -> None:
    gateway = Gateway(hub, AUTH, max_topics=2)
    async with connect(gateway, handshake(token(topics=["*"]))) as client:
        await welcome(client)
        assert await request(client, type="subscribe", topic="a") == subscribed("a")
        assert await request(client, type="subscribe", topic="b") == subscribed("b")
        reply = await request(client, type="subscribe", topic="c")
        assert isinstance(reply, Error)
        assert reply.code == "forbidden"
        assert "2 topics" in reply.message
        # Subscribing again to a topic it holds is not a new topic.
        assert await request(client, type="subscribe", topic="a") == subscribed("a")
        assert await request(client, type="unsubscribe", topic="b") == Unsubscribed("b")
        assert await request(client, type="subscribe", topic="c") == subscribed("c")


async def test_an_async_topic_policy_decides(hub: Hub) -> None:
    async def own_inbox_only(principal: Principal, topic: str) -> bool:
        await anyio.lowlevel.checkpoint()
        return topic == f"inbox:{principal.user_id}"

    gateway = Gateway(hub, AUTH, topic_policy=own_inbox_only)
    async with connect(gateway, handshake(token("42"))) as client:
        await welcome(client)
        assert await request(client, type="subscribe", topic="inbox:42") == subscribed("inbox:42")
        reply = await request(client, type="subscribe", topic="inbox:43")
        assert isinstance(reply, Error)
        assert reply.code == "forbidden"


async def test_a_topic_policy_that_raises_refuses_and_the_connection_survives(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(principal: Principal, topic: str) -> bool:
        raise KeyError("bug in the app's policy")

    gateway = Gateway(hub, AUTH, topic_policy=broken)
    async with connect(gateway, handshake(token())) as client:
        await welcome(client)
        reply = await request(client, type="subscribe", topic="news")
        assert isinstance(reply, Error)
        assert reply.code == "forbidden"
        assert await request(client, type="ping", ref="alive") == Pong("alive")
    assert "topic policy failed" in caplog.text


async def test_unsubscribe_stops_topic_notifications(hub: Hub, gateway: Gateway) -> None:
    async with connect(gateway, handshake(token("42", topics=["news"]))) as client:
        await welcome(client)
        assert await request(client, type="subscribe", topic="news") == subscribed("news")
        await hub.notify_topic("news", "before")
        assert (await next_notification(client)).event == "before"

        reply = await request(client, type="unsubscribe", topic="news", ref="u1")
        assert reply == Unsubscribed("news", "u1")
        assert "t:news" not in list(hub.state.keys())
        await hub.notify_topic("news", "after")
        await hub.notify_user("42", "sentinel")
        assert (await next_notification(client)).event == "sentinel"


async def test_unsubscribing_from_a_topic_never_subscribed_is_answered_unsubscribed(
    gateway: Gateway,
) -> None:
    async with connect(gateway, handshake(token())) as client:
        await welcome(client)
        assert await request(client, type="unsubscribe", topic="news") == Unsubscribed("news")


# --- bad frames -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("not json", "bad_frame"),
        ("[1, 2]", "bad_frame"),
        ('{"no": "type"}', "bad_frame"),
        ('{"type": "subscribe"}', "bad_frame"),
        ('{"type": "ping", "ref": 7}', "bad_frame"),
        (b'{"type": "ping"}', "bad_frame"),
        ('{"type": "launch"}', "unknown_type"),
    ],
)
async def test_an_invalid_frame_gets_an_error_frame_and_the_connection_stays_open(
    hub: Hub, gateway: Gateway, message: str | bytes, code: str
) -> None:
    async with connect(gateway, handshake(token())) as client:
        await welcome(client)
        if isinstance(message, bytes):
            await client.send_bytes(message)
        else:
            await client.send_text(message)
        reply = await client.recv()
        assert isinstance(reply, Error)
        assert reply.code == code
        assert reply.message
        assert await request(client, type="ping") == Pong()
    assert hub.metrics["bad_frames"] == 1


async def test_max_bad_frames_in_a_row_close_the_connection_with_4400(hub: Hub) -> None:
    gateway = Gateway(hub, AUTH, max_bad_frames=3)
    async with connect(gateway, handshake(token())) as client:
        await welcome(client)
        for _ in range(3):
            await client.send_text("garbage")
        assert (await client.closed()) == (CloseCode.BAD_FRAME, "too many invalid frames")
        replies = await read_until_closed(client)
        # Error frames still queued when the connection closes may be dropped with it.
        assert len(replies) <= 2
        assert all(isinstance(r, Error) and r.code == "bad_frame" for r in replies)
    assert_no_state(hub)


async def test_a_valid_frame_resets_the_bad_frame_count(hub: Hub) -> None:
    gateway = Gateway(hub, AUTH, max_bad_frames=3)
    async with connect(gateway, handshake(token())) as client:
        await welcome(client)
        for _ in range(2):
            await client.send_text("garbage")
        await client.send_json({"type": "ping", "ref": "between"})
        for _ in range(2):
            await client.send_text("garbage")
        await client.send_json({"type": "ping", "ref": "still-open"})
        replies = [await client.recv() for _ in range(6)]
        assert [type(r).__name__ for r in replies] == ["Error"] * 2 + ["Pong"] + ["Error"] * 2 + [
            "Pong"
        ]
        assert replies[-1] == Pong("still-open")
        assert client.close_code is None


@pytest.mark.parametrize(
    "padding", [pytest.param("x" * 200, id="ascii"), pytest.param("é" * 60, id="multibyte")]
)
async def test_a_frame_over_max_frame_bytes_gets_frame_too_large(hub: Hub, padding: str) -> None:
    gateway = Gateway(hub, AUTH, max_frame_bytes=100)
    async with connect(gateway, handshake(token())) as client:
        await welcome(client)
        message = f'{{"type":"ping","pad":"{padding}"}}'
        assert len(message.encode()) > 100
        await client.send_text(message)
        reply = await client.recv()
        assert isinstance(reply, Error)
        assert reply.code == "frame_too_large"
        assert await request(client, type="ping", pad="é" * 20) == Pong()


# --- token expiry and refresh -----------------------------------------------------------------


class WallClock:
    """The wall clock the authenticator and the gateway read, set by the test: a token's
    expiry comes within milliseconds instead of seconds."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


EXPIRES_IN = 0.05  # seconds of (real) time left once the clock is set just before an expiry


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture
def timed_gateway(hub: Hub, clock: WallClock) -> Gateway:
    """A gateway whose authenticator and expiry deadlines read ``clock``."""
    return Gateway(hub, JWTAuthenticator(secret=SECRET, clock=clock), clock=clock)


async def test_an_expired_token_closes_the_connection_with_4001(
    hub: Hub, timed_gateway: Gateway, clock: WallClock
) -> None:
    signed = token("42", ttl=60)
    clock.now = await expiry_of(signed) - EXPIRES_IN
    async with connect(timed_gateway, handshake(signed)) as client:
        await welcome(client)
        assert (await client.closed()) == (CloseCode.UNAUTHORIZED, "token expired")
    assert_no_state(hub)


async def test_a_refresh_for_the_same_user_extends_the_connection(
    hub: Hub, timed_gateway: Gateway, clock: WallClock
) -> None:
    first = token("42", ttl=60)
    first_expiry = await expiry_of(first)
    clock.now = first_expiry - EXPIRES_IN
    async with connect(timed_gateway, handshake(first)) as client:
        assert (await welcome(client)).expires_at == int(first_expiry)
        fresh = token("42", ttl=600, topics=["news"])
        reply = await request(client, type="refresh", token=fresh, ref="r1")
        assert reply == Refreshed(int(await expiry_of(fresh)), "r1")

        await anyio.sleep(2 * EXPIRES_IN)  # past the first token's expiry
        assert await request(client, type="ping", ref="alive") == Pong("alive")
        # The refreshed claims are the ones the topic policy now sees.
        assert await request(client, type="subscribe", topic="news") == subscribed("news")
        assert client.close_code is None


async def test_a_refresh_leaves_the_topics_the_new_token_no_longer_allows(
    hub: Hub, gateway: Gateway
) -> None:
    async with connect(gateway, handshake(token("42", topics=["news", "team:*"]))) as client:
        await welcome(client)
        assert await request(client, type="subscribe", topic="news") == subscribed("news")
        assert await request(client, type="subscribe", topic="team:7") == subscribed("team:7")

        narrower = token("42", ttl=60, topics=["team:*"])
        # Revoked topics are announced first, without a ref; then the refresh is answered.
        assert await request(client, type="refresh", token=narrower, ref="r1") == Unsubscribed(
            "news"
        )
        assert await client.recv() == Refreshed(int(await expiry_of(narrower)), "r1")

        assert "t:news" not in list(hub.state.keys())
        await hub.notify_topic("news", "revoked")
        await hub.notify_topic("team:7", "still-allowed")
        assert (await next_notification(client)).event == "still-allowed"


async def test_a_refresh_with_another_users_token_is_forbidden_and_changes_nothing(
    hub: Hub, timed_gateway: Gateway, clock: WallClock
) -> None:
    signed = token("42", ttl=60)
    clock.now = await expiry_of(signed) - 10 * EXPIRES_IN
    async with connect(timed_gateway, handshake(signed)) as client:
        await welcome(client)
        reply = await request(client, type="refresh", token=token("43", ttl=600), ref="r1")
        assert isinstance(reply, Error)
        assert (reply.code, reply.ref) == ("forbidden", "r1")
        assert len(hub.local_connections("42")) == 1
        assert len(hub.local_connections("43")) == 0
        # Still bound to the first token: it expires at that token's exp, not 600 s later.
        assert (await client.closed()) == (CloseCode.UNAUTHORIZED, "token expired")


@pytest.mark.parametrize(
    "bad_token",
    [
        pytest.param("garbage", id="garbage"),
        pytest.param(expired_token("42"), id="expired"),
        pytest.param(
            mint_token("42", secret="another-secret-0123456789abcdefghij"), id="wrong-key"
        ),
    ],
)
async def test_a_refresh_with_an_invalid_token_is_forbidden(
    hub: Hub, gateway: Gateway, bad_token: str
) -> None:
    async with connect(gateway, handshake(token("42"))) as client:
        await welcome(client)
        reply = await request(client, type="refresh", token=bad_token)
        assert isinstance(reply, Error)
        assert reply.code == "forbidden"
        assert reply.message.startswith("refresh refused")
        assert await request(client, type="ping") == Pong()


# --- slow consumers, shutdown, cancellation, broken transports --------------------------------


async def test_a_client_that_stops_reading_is_closed_4008_then_dropped_and_others_keep_receiving(
    hub: Hub,
) -> None:
    gateway = Gateway(hub, AUTH, queue_size=4, close_timeout=0.2)
    async with (
        connect(gateway, handshake(token("42")), read_buffer=3) as slow,
        connect(gateway, handshake(token("42"))) as healthy,
    ):
        await welcome(slow)  # then it reads nothing more: 3 frames fill its socket buffer
        await welcome(healthy)
        sent = [await hub.notify_user("42", "tick", n) for n in range(20)]
        with anyio.fail_after(2):
            await slow.dropped.wait()
        # Its close frame could not be written: the connection was dropped, and counted.
        assert slow.close_code is None
        assert hub.metrics["slow_consumer_closes"] == 1
        assert hub.metrics["aborted_connections"] == 1
        assert len(hub.local_connections("42")) == 1
        assert [(await next_notification(healthy)).id for _ in sent] == sent
        after = await hub.notify_user("42", "after")
        assert (await next_notification(healthy)).id == after
    assert_no_state(hub)


async def test_a_slow_client_that_still_reads_gets_4008_after_what_was_on_its_way(hub: Hub) -> None:
    gateway = Gateway(hub, AUTH, queue_size=4)
    async with connect(gateway, handshake(token("42")), read_buffer=3) as slow:
        await welcome(slow)
        sent = [await hub.notify_user("42", "tick", n) for n in range(20)]
        got = [frame.id for frame in await read_until_closed(slow, Notification)]
        assert (await slow.closed())[0] == CloseCode.SLOW_CONSUMER
        # What it got is a prefix of what was sent: its queue was dropped, nothing reordered.
        assert 1 <= len(got) < len(sent)
        assert got == sent[: len(got)]
    assert hub.metrics["slow_consumer_closes"] == 1
    assert hub.metrics["aborted_connections"] == 0
    assert_no_state(hub)


async def test_leaving_the_hub_closes_every_connection_with_1001_and_serve_returns() -> None:
    returned: list[MemoryClient] = []

    async def serve_until_closed(
        gateway: Gateway, user: str, client: MemoryClient, transport: MemoryTransport
    ) -> None:
        await serve(gateway, transport, handshake(token(user)))
        returned.append(client)

    clients = []
    with anyio.fail_after(SERVE_TIMEOUT):
        async with anyio.create_task_group() as tasks:
            async with Hub() as hub:
                gateway = Gateway(hub, AUTH)
                for user in ("1", "2", "2"):
                    client, transport = memory_websocket()
                    tasks.start_soon(serve_until_closed, gateway, user, client, transport)
                    await welcome(client)
                    clients.append(client)
                assert hub.state.connection_count == 3
            assert_no_state(hub)
    assert sorted(map(id, returned)) == sorted(map(id, clients))
    assert [c.close_code for c in clients] == [CloseCode.GOING_AWAY] * 3
    assert not any(c.disconnected for c in clients)


async def test_cancelling_serve_unregisters_the_connection(hub: Hub, gateway: Gateway) -> None:
    async with anyio.create_task_group() as tasks:
        client, transport = memory_websocket()
        tasks.start_soon(serve, gateway, transport, handshake(token("42", topics=["news"])))
        await welcome(client)
        assert await request(client, type="subscribe", topic="news") == subscribed("news")
        assert hub.state.connection_count == 1
        tasks.cancel_scope.cancel()
    assert_no_state(hub)


async def test_an_exception_in_the_transports_send_closes_1011_and_unregisters(
    hub: Hub, gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    async with connect(gateway, handshake(token("42"))) as client:
        await welcome(client)
        client.send_error = RuntimeError("the framework blew up")
        await hub.notify_user("42", "boom")
        assert (await client.closed()) == (CloseCode.INTERNAL_ERROR, "internal error")
    assert_no_state(hub)
    assert "failed" in caplog.text


async def test_a_client_gone_while_the_server_sends_is_unregistered(hub: Hub) -> None:
    gateway = Gateway(hub, AUTH)
    async with connect(gateway, handshake(token("42")), read_buffer=1) as client:
        await welcome(client)
        await hub.notify_user("42", "fills the buffer")
        await hub.notify_user("42", "blocks the writer")
        client.disconnect()
    assert_no_state(hub)
    assert hub.metrics["connections_closed"] == 1


# --- nothing is left behind -------------------------------------------------------------------


async def test_a_thousand_connects_and_disconnects_leave_no_state_and_no_task(hub: Hub) -> None:
    gateway = Gateway(hub, AUTH, max_bad_frames=2)
    tokens = [token(str(user), topics=["team:*"]) for user in range(7)]
    tasks_before = len(anyio.get_running_tasks())

    async def one_connection(cycle: int) -> None:
        user = str(cycle % 7)
        async with connect(gateway, handshake(tokens[cycle % 7])) as client:
            await welcome(client)
            if cycle % 3 == 0:
                topic = f"team:{cycle % 5}"
                await client.send_json({"type": "subscribe", "topic": topic})
                reply = await client.recv()
                while isinstance(reply, Notification):  # others' notifications may come first
                    reply = await client.recv()
                assert reply == subscribed(topic)
            if cycle % 4 == 1:  # the server ends it (4400) rather than the client
                await client.send_text("garbage")
                await client.send_text("garbage")
                assert (await client.closed())[0] == CloseCode.BAD_FRAME
            elif cycle % 4 == 2:  # leaves with notifications in flight
                await hub.notify_user(user, "in-flight")
                await hub.notify_topic(f"team:{cycle % 5}", "in-flight")

    for batch in range(20):
        async with anyio.create_task_group() as tasks:
            for cycle in range(batch * 50, batch * 50 + 50):
                tasks.start_soon(one_connection, cycle)

    assert_no_state(hub)
    assert hub.metrics["connections_opened"] == hub.metrics["connections_closed"] == 1000
    assert len(anyio.get_running_tasks()) == tasks_before
