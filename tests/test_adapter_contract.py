"""The contract every adapter keeps, one suite over all of them: the ASGI app under uvicorn, the
``websockets`` server, and Django Channels under uvicorn (tests/adapters_e2e.py).

Each runs as a real server process on a real Redis; the clients are real ``websockets``
clients; notifications are published through that Redis by a hub in the test process, exactly
as another instance of the deployment would. Absence is proven with a sentinel broadcast:
delivery to one connection is in publish order, so a connection that must not receive a
notification sees the sentinel as its next frame.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import jwt
import pytest
from adapters_e2e import ADAPTERS, MAX_FRAME, ORIGIN, WS_MAX, Adapter
from servers import RedisServer
from servers_e2e import (
    OTHER_SECRET,
    SECRET,
    SUBPROTOCOL,
    Server,
    client,
    closed,
    log_on_failure,
    notification,
    recv,
    send,
    token,
    wait_for_health,
    welcome,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from notifykit import Hub
from notifykit.redis import RedisPropagator

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.redis]

PREFIX = "nk-contract"


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=list(ADAPTERS))
def adapter(request: pytest.FixtureRequest) -> Adapter:
    return ADAPTERS[request.param]


@pytest.fixture(scope="module")
def server(adapter: Adapter, redis: RedisServer) -> Iterator[Server]:
    srv = adapter.start(redis.url, f"{PREFIX}-{adapter.name}")
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _server_log(request: pytest.FixtureRequest, server: Server) -> Iterator[None]:
    with log_on_failure(request, server):
        yield


@pytest.fixture
async def publisher(adapter: Adapter, redis: RedisServer) -> AsyncIterator[Hub]:
    """Another instance of the deployment: a hub on the same Redis that only publishes."""
    async with Hub(RedisPropagator(redis.url, prefix=f"{PREFIX}-{adapter.name}")) as hub:
        yield hub


async def sentinel(publisher: Hub, *sockets: Any) -> None:
    """Broadcast a sentinel: it must be the next frame on each socket."""
    sent = await publisher.broadcast("sentinel")
    for ws in sockets:
        frame = await notification(ws)
        assert (frame["event"], frame["id"]) == ("sentinel", sent), frame


# --- welcome and delivery -------------------------------------------------------------------


@pytest.mark.parametrize("via", ["header", "subprotocol", "query"])
async def test_a_token_from_any_source_is_welcomed_with_the_subprotocol(
    server: Server, via: str
) -> None:
    async with client(server, token("ada"), via=via) as ws:
        assert ws.subprotocol == SUBPROTOCOL  # never the bearer.<jwt> entry
        frame = await welcome(ws)
        assert frame["user"] == "ada"
        assert frame["connection_id"]
        assert isinstance(frame["expires_at"], int)


async def test_a_client_that_offers_no_subprotocol_gets_none(server: Server) -> None:
    async with client(server, token("ada"), subprotocols=()) as ws:
        assert ws.subprotocol is None
        await welcome(ws)


async def test_a_user_notification_reaches_each_of_their_connections_and_no_one_else(
    server: Server, publisher: Hub
) -> None:
    async with (
        client(server, token("bea")) as bea1,
        client(server, token("bea"), via="subprotocol") as bea2,
        client(server, token("cal")) as cal,
    ):
        for ws in (bea1, bea2, cal):
            await welcome(ws)
        sent = await publisher.notify_user("bea", "order.shipped", {"order": 7})
        for ws in (bea1, bea2):
            frame = await notification(ws)
            assert (frame["id"], frame["event"], frame["data"]) == (
                sent,
                "order.shipped",
                {"order": 7},
            )
        await sentinel(publisher, bea1, bea2, cal)


async def test_anonymous_clients_get_broadcasts_only(server: Server, publisher: Hub) -> None:
    async with client(server) as anonymous, client(server, token("dan")) as dan:
        assert (await welcome(anonymous))["user"] is None
        await welcome(dan)
        await publisher.notify_authenticated("members-only")
        assert (await notification(dan))["event"] == "members-only"
        await sentinel(publisher, anonymous, dan)


async def test_exclude_skips_that_connection(server: Server, publisher: Hub) -> None:
    async with client(server, token("eli")) as tab1, client(server, token("eli")) as tab2:
        skipped = (await welcome(tab1))["connection_id"]
        await welcome(tab2)
        sent = await publisher.notify_user("eli", "edit", exclude=skipped)
        assert (await notification(tab2))["id"] == sent
        await sentinel(publisher, tab1, tab2)


# --- topics ---------------------------------------------------------------------------------


async def test_topics_reach_their_subscribers_and_the_policy_is_enforced(
    server: Server, publisher: Hub
) -> None:
    async with (
        client(server, token("fay", topics=["team:7:*"])) as fay,
        client(server, token("gus", topics=["team:7:*"])) as gus,
    ):
        await welcome(fay)
        await welcome(gus)
        await send(fay, {"type": "subscribe", "topic": "team:7:chat", "ref": "s1"})
        assert await recv(fay) == {"type": "subscribed", "topic": "team:7:chat", "ref": "s1"}
        await send(fay, {"type": "subscribe", "topic": "team:8:chat", "ref": "s2"})
        refused = await recv(fay)
        assert (refused["type"], refused["code"], refused["ref"]) == ("error", "forbidden", "s2")

        sent = await publisher.notify_topic("team:7:chat", "chat", "hi")
        frame = await notification(fay)
        assert (frame["id"], frame["topic"]) == (sent, "team:7:chat")
        await publisher.notify_topic("team:8:chat", "elsewhere")
        await sentinel(publisher, fay, gus)  # gus never subscribed; fay was refused team:8

        await send(fay, {"type": "unsubscribe", "topic": "team:7:chat", "ref": "u1"})
        assert await recv(fay) == {"type": "unsubscribed", "topic": "team:7:chat", "ref": "u1"}
        await publisher.notify_topic("team:7:chat", "after")
        await sentinel(publisher, fay)


# --- refresh and expiry ---------------------------------------------------------------------


async def test_refresh_extends_a_connection_and_an_unrefreshed_one_closes_with_4001(
    server: Server, publisher: Hub
) -> None:
    short = token("hal", ttl=3)
    async with client(server, short) as refreshed, client(server, short) as left_alone:
        first_expiry = (await welcome(refreshed))["expires_at"]
        await welcome(left_alone)
        await send(refreshed, {"type": "refresh", "token": token("hal"), "ref": "r1"})
        frame = await recv(refreshed)
        assert (frame["type"], frame["ref"]) == ("refreshed", "r1")
        assert frame["expires_at"] > first_expiry
        await send(refreshed, {"type": "refresh", "token": token("mallory"), "ref": "r2"})
        frame = await recv(refreshed)
        assert (frame["type"], frame["code"], frame["ref"]) == ("error", "forbidden", "r2")

        assert await closed(left_alone, within=10) == (4001, "token expired", [])
        sent = await publisher.notify_user("hal", "still-here")
        assert (await notification(refreshed))["id"] == sent


# --- refusals -------------------------------------------------------------------------------


def _expired() -> str:
    now = int(time.time())
    return jwt.encode({"sub": "ivy", "iat": now - 120, "exp": now - 60}, SECRET, "HS256")


@pytest.mark.parametrize(
    ("make", "says"),
    [
        pytest.param(lambda: "garbage", "not a valid JWT", id="garbage"),
        pytest.param(_expired, "expired", id="expired"),
        pytest.param(lambda: token("ivy", secret=OTHER_SECRET), "signature", id="wrong-key"),
    ],
)
@pytest.mark.parametrize("via", ["header", "subprotocol", "query"])
async def test_a_bad_token_is_closed_with_4001_and_a_reason_before_any_frame(
    server: Server, make: Any, says: str, via: str
) -> None:
    async with client(server, make(), via=via) as ws:
        code, reason, frames = await closed(ws)
    assert (code, frames) == (4001, [])
    assert says in reason


async def test_refused_clients_leave_nothing_registered(server: Server) -> None:
    for bad in ("garbage", _expired(), token("ivy", secret=OTHER_SECRET)):
        async with client(server, bad) as ws:
            await closed(ws)
    async with client(server, token("ivy"), origin="https://evil.example") as ws:
        await closed(ws)
    body = await wait_for_health(server, lambda h: h["connections"] == 0)
    assert body == {"status": "ok", "connections": 0, "users": 0}


@pytest.mark.parametrize(
    ("origin", "welcomed"),
    [
        pytest.param(ORIGIN, True, id="allowed"),
        pytest.param(None, True, id="no-origin-header"),
        pytest.param("https://evil.example", False, id="other"),
    ],
)
async def test_the_origin_allow_list_is_enforced_with_4003(
    server: Server, origin: str | None, welcomed: bool
) -> None:
    async with client(server, token("jon"), origin=origin) as ws:
        if welcomed:
            assert (await welcome(ws))["user"] == "jon"
        else:
            assert await closed(ws) == (4003, "origin not allowed", [])


# --- bad frames -----------------------------------------------------------------------------


async def test_bad_frames_get_error_frames_and_ten_in_a_row_close_with_4400(
    server: Server,
) -> None:
    async with client(server, token("kim")) as ws:
        await welcome(ws)
        for raw, code in [
            ("garbage", "bad_frame"),
            ('{"type": "dance"}', "unknown_type"),
            (b"\x00\x01binary", "bad_frame"),
            (json.dumps({"type": "ping", "pad": "x" * MAX_FRAME}), "frame_too_large"),
        ]:
            await ws.send(raw)
            frame = await recv(ws)
            assert (frame["type"], frame["code"]) == ("error", code), raw
        await send(ws, {"type": "ping", "ref": "p"})
        assert await recv(ws) == {"type": "pong", "ref": "p"}
        for _ in range(10):
            await ws.send("garbage")
        code, reason, frames = await closed(ws)
        assert (code, reason) == (4400, "too many invalid frames")
        assert [f["code"] for f in frames] == ["bad_frame"] * 9


async def test_a_message_over_the_websocket_limit_closes_with_1009_and_others_go_on(
    server: Server, publisher: Hub
) -> None:
    async with client(server, token("lea")) as ws, client(server, token("max")) as bystander:
        await welcome(ws)
        await welcome(bystander)
        await ws.send("x" * (WS_MAX + 1))
        code, _reason, _frames = await closed(ws)
        assert code == 1009
        sent = await publisher.notify_user("max", "still-serving")
        assert (await notification(bystander))["id"] == sent


# --- a client that stops reading ------------------------------------------------------------


async def test_a_client_that_stops_reading_is_dropped_and_the_others_keep_receiving(
    server: Server, publisher: Hub
) -> None:
    """Its queue overflows (4008); the close frame cannot reach a client that does not read,
    so the connection is either closed with 4008 or aborted — either way it leaves routing
    while it is still not reading, and a bystander is served throughout."""
    async with (
        connect(
            f"{server.ws_url}/ws",
            additional_headers={"Authorization": f"Bearer {token('ned')}"},
            compression=None,
            max_queue=1,  # the client stops taking data off the socket at once
            open_timeout=5,
            close_timeout=1,
        ) as slow,
        client(server, token("oli")) as bystander,
    ):
        await welcome(slow)
        await welcome(bystander)
        payload = "x" * 32_000
        published = 0
        with anyio.fail_after(60):
            while (await _health(server))["users"] == 2:
                for _ in range(20):
                    await publisher.notify_user("ned", "flood", payload)
                published += 20
                assert published <= 2000, "the slow client was never dropped"
        sent = await publisher.notify_user("oli", "unaffected")
        assert (await notification(bystander))["id"] == sent

        received = 0
        with anyio.fail_after(30):
            try:
                while True:
                    await slow.recv()
                    received += 1
            except ConnectionClosed as exc:
                close_code = None if exc.rcvd is None else exc.rcvd.code
        assert close_code in (4008, None), close_code  # 4008, or dropped without a close
        assert received < published  # what overflowed was never sent


async def _health(server: Server) -> dict[str, Any]:
    return await wait_for_health(server, lambda h: True)


# --- shutdown -------------------------------------------------------------------------------


async def test_stopping_the_server_closes_every_client_with_a_reconnect_code(
    adapter: Adapter, redis: RedisServer, tmp_path: Path
) -> None:
    own = adapter.start(redis.url, f"{PREFIX}-{adapter.name}-own")
    try:
        async with client(own, token("pam")) as a, client(own) as b:
            await welcome(a)
            await welcome(b)
            os.kill(own.process.pid, signal.SIGTERM)
            for ws in (a, b):
                code, _reason, frames = await closed(ws, within=10)
                assert (code, frames) == (adapter.shutdown_code, [])
        returncode = await anyio.to_thread.run_sync(own.process.wait, 15)
        assert returncode in (0, -signal.SIGTERM), own.output()
    finally:
        own.stop(signal.SIGKILL)
