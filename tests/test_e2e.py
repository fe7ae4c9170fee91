"""End to end: ``notifykit serve`` in a subprocess, real websocket clients, publishing over HTTP.

Absence is proven with a sentinel: after a targeted notification, a broadcast sentinel is
published; a connection that must not receive the first one sees the sentinel as its next frame
(delivery to one connection is in publish order).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from servers_e2e import (
    API_KEY,
    FRAME_TIMEOUT,
    SECRET,
    SUBPROTOCOL,
    Server,
    client,
    closed,
    log_on_failure,
    notification,
    publish,
    recv,
    send,
    sentinel,
    start_serve,
    token,
    wait_for_health,
    welcome,
)
from websockets.asyncio.client import connect

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

ALLOWED_ORIGIN = "https://app.example"
MAX_FRAME = 1024  # the server refuses larger frames with an error frame...
WS_MAX = 4 * MAX_FRAME  # ...and its websocket layer drops even larger ones with 1009
MAX_PUBLISH = 4096


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = start_serve(
        "--jwt-secret",
        SECRET,
        "--api-key",
        API_KEY,
        "--allow-anonymous",
        "--allow-origin",
        ALLOWED_ORIGIN,
        "--max-frame-bytes",
        str(MAX_FRAME),
        "--max-publish-bytes",
        str(MAX_PUBLISH),
    )
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _server_log(request: pytest.FixtureRequest, server: Server) -> Iterator[None]:
    with log_on_failure(request, server):
        yield


# --- targeting ----------------------------------------------------------------------------


async def test_every_connection_of_a_user_receives_it_and_other_users_do_not(
    server: Server,
) -> None:
    async with (
        client(server, token("alice")) as alice1,
        client(server, token("alice"), via="query") as alice2,
        client(server, token("bob")) as bob,
    ):
        for ws in (alice1, alice2, bob):
            await welcome(ws)
        sent = await publish(server, {"event": "order.shipped", "data": {"id": 7}, "user": "alice"})
        for ws in (alice1, alice2):
            frame = await notification(ws)
            assert frame["id"] == sent
            assert (frame["event"], frame["data"]) == ("order.shipped", {"id": 7})
            assert isinstance(frame["ts"], int)
        await sentinel(server, alice1, alice2, bob)  # bob got nothing, alice no duplicate


async def test_users_target_reaches_each_listed_user_once(server: Server) -> None:
    async with (
        client(server, token("ann")) as ann,
        client(server, token("ben")) as ben,
        client(server, token("cat")) as cat,
    ):
        for ws in (ann, ben, cat):
            await welcome(ws)
        sent = await publish(server, {"event": "team.update", "users": ["ann", "ben", "ann"]})
        assert (await notification(ann))["id"] == sent
        assert (await notification(ben))["id"] == sent
        await sentinel(server, ann, ben, cat)


async def test_a_topic_reaches_exactly_its_subscribers(server: Server) -> None:
    member = token("dora", topics=["team:7:*", "doc:42"])
    async with (
        client(server, member) as dora,
        client(server, member) as dora_elsewhere,
        client(server, token("eve", topics=["team:*"])) as eve,
    ):
        for ws in (dora, dora_elsewhere, eve):
            await welcome(ws)
        await send(dora, {"type": "subscribe", "topic": "team:7:chat", "ref": "s1"})
        reply = await recv(dora)
        assert (reply["type"], reply["topic"], reply["ref"]) == ("subscribed", "team:7:chat", "s1")
        assert reply["position"]["offset"] == 0
        await send(eve, {"type": "subscribe", "topic": "team:7:chat"})
        reply = await recv(eve)
        assert (reply["type"], reply["topic"], "ref" in reply) == (
            "subscribed",
            "team:7:chat",
            False,
        )
        await send(dora, {"type": "subscribe", "topic": "doc:42"})
        assert (await recv(dora))["type"] == "subscribed"

        sent = await publish(server, {"event": "chat", "data": "hi", "topic": "team:7:chat"})
        for ws in (dora, eve):
            frame = await notification(ws)
            assert (frame["id"], frame["topic"]) == (sent, "team:7:chat")
        await publish(server, {"event": "doc", "topic": "doc:42"})
        assert (await notification(dora))["event"] == "doc"
        # dora_elsewhere is the same user but never subscribed: topics are per connection.
        await sentinel(server, dora, dora_elsewhere, eve)

        await send(dora, {"type": "unsubscribe", "topic": "team:7:chat", "ref": "u1"})
        assert await recv(dora) == {"type": "unsubscribed", "topic": "team:7:chat", "ref": "u1"}
        await publish(server, {"event": "chat", "topic": "team:7:chat"})
        assert (await notification(eve))["event"] == "chat"
        await sentinel(server, dora, eve)


@pytest.mark.parametrize(
    ("claims", "topic"),
    [
        pytest.param({"topics": ["team:7:*"]}, "team:8:chat", id="outside-the-wildcard"),
        pytest.param({"topics": ["doc:42"]}, "doc:421", id="exact-pattern-is-not-a-prefix"),
        pytest.param({}, "team:7:chat", id="no-topics-claim"),
        pytest.param({"topics": "team:7:chat"}, "team:7:chats", id="single-pattern-string"),
    ],
)
async def test_a_subscription_the_policy_refuses_gets_forbidden_and_no_notifications(
    server: Server, claims: dict[str, Any], topic: str
) -> None:
    async with client(server, token("fay", **claims)) as ws:
        await welcome(ws)
        await send(ws, {"type": "subscribe", "topic": topic, "ref": "x"})
        frame = await recv(ws)
        assert (frame["type"], frame["code"], frame["ref"]) == ("error", "forbidden", "x")
        assert topic in frame["message"]
        await publish(server, {"event": "secret", "topic": topic})
        await sentinel(server, ws)


async def test_an_invalid_topic_name_gets_invalid_topic(server: Server) -> None:
    async with client(server, token("gus", topics=["*"])) as ws:
        await welcome(ws)
        await send(ws, {"type": "subscribe", "topic": "no spaces allowed"})
        frame = await recv(ws)
        assert (frame["type"], frame["code"]) == ("error", "invalid_topic")


async def test_authenticated_reaches_every_authenticated_connection_but_not_anonymous(
    server: Server,
) -> None:
    async with (
        client(server, token("hal")) as hal,
        client(server, token("ivy")) as ivy,
        client(server) as anonymous,
    ):
        assert (await welcome(anonymous))["user"] is None
        for ws in (hal, ivy):
            await welcome(ws)
        sent = await publish(server, {"event": "maintenance", "authenticated": True})
        for ws in (hal, ivy):
            assert (await notification(ws))["id"] == sent
        await sentinel(server, hal, ivy, anonymous)


async def test_broadcast_reaches_every_connection_including_anonymous(server: Server) -> None:
    async with client(server, token("jan")) as jan, client(server) as anonymous:
        await welcome(jan)
        await welcome(anonymous)
        sent = await publish(server, {"event": "hello", "data": [1, 2], "broadcast": True})
        for ws in (jan, anonymous):
            frame = await notification(ws)
            assert (frame["id"], frame["data"]) == (sent, [1, 2])


async def test_anonymous_connections_cannot_subscribe_or_refresh(server: Server) -> None:
    async with client(server) as anonymous:
        await welcome(anonymous)
        await send(anonymous, {"type": "subscribe", "topic": "news"})
        assert (await recv(anonymous))["code"] == "forbidden"
        await send(anonymous, {"type": "refresh", "token": token("kim")})
        assert (await recv(anonymous))["code"] == "forbidden"


async def test_exclude_skips_exactly_that_connection(server: Server) -> None:
    async with (
        client(server, token("lea")) as sender,
        client(server, token("lea")) as other_tab,
        client(server, token("max")) as max_,
    ):
        sender_id = (await welcome(sender))["connection_id"]
        await welcome(other_tab)
        await welcome(max_)
        sent = await publish(server, {"event": "edit", "user": "lea", "exclude": sender_id})
        assert (await notification(other_tab))["id"] == sent
        await sentinel(server, sender, other_tab, max_)
        sent = await publish(server, {"event": "all", "broadcast": True, "exclude": sender_id})
        assert (await notification(other_tab))["id"] == sent
        assert (await notification(max_))["id"] == sent
        await sentinel(server, sender, other_tab, max_)


# --- state ----------------------------------------------------------------------------------


async def test_connections_are_counted_and_disconnects_leave_no_state(server: Server) -> None:
    async with (
        client(server, token("ned")) as a,
        client(server, token("ned")) as b,
        client(server, token("oli")) as c,
        client(server) as anonymous,
    ):
        for ws in (a, b, c, anonymous):
            await welcome(ws)
        body = await wait_for_health(server, lambda h: h["connections"] == 4)
        assert body == {"status": "ok", "connections": 4, "users": 2}

    async def churn(i: int) -> None:
        tok = token(f"churn-{i % 25}", topics=["room:*"]) if i % 7 else None
        async with connect(
            f"{server.ws_url}/ws",
            additional_headers={"Authorization": f"Bearer {tok}"} if tok else {},
            open_timeout=FRAME_TIMEOUT,
            close_timeout=1,
        ) as ws:
            await welcome(ws)
            if tok is not None and i % 2:
                await send(ws, {"type": "subscribe", "topic": f"room:{i % 5}"})
                assert (await recv(ws))["type"] == "subscribed"
            if i % 3 == 0:
                ws.transport.abort()  # gone without a close handshake

    for batch in range(10):  # 200 connections, 20 at a time
        async with anyio.create_task_group() as tasks:
            for i in range(batch * 20, batch * 20 + 20):
                tasks.start_soon(churn, i)
    body = await wait_for_health(server, lambda h: h["connections"] == 0 and h["users"] == 0)
    assert body["status"] == "ok"

    async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
        metrics = (await http.get(f"{server.url}/metrics")).text
    assert "notifykit_connections 0.0" in metrics.splitlines()
    assert (
        "notifykit_propagator_subscriptions 0.0" in metrics.splitlines()
    )  # nothing left subscribed


# --- refresh --------------------------------------------------------------------------------


async def test_refresh_extends_a_connection_and_one_that_does_not_refresh_is_closed(
    server: Server,
) -> None:
    short = token("rita", ttl=3)
    async with (
        client(server, short) as refreshed,
        client(server, short) as left_alone,
        client(server, short) as hijacker,
    ):
        first_expiry = (await welcome(refreshed))["expires_at"]
        await welcome(left_alone)
        await welcome(hijacker)

        await send(refreshed, {"type": "refresh", "token": token("rita"), "ref": "r1"})
        frame = await recv(refreshed)
        assert (frame["type"], frame["ref"]) == ("refreshed", "r1")
        assert frame["expires_at"] > first_expiry

        # Another user's valid token, or an invalid one, is refused and changes nothing.
        await send(hijacker, {"type": "refresh", "token": token("mallory"), "ref": "h1"})
        frame = await recv(hijacker)
        assert (frame["type"], frame["code"], frame["ref"]) == ("error", "forbidden", "h1")
        await send(hijacker, {"type": "refresh", "token": "not-a-jwt", "ref": "h2"})
        assert (await recv(hijacker))["code"] == "forbidden"
        await publish(server, {"event": "for-mallory", "user": "mallory"})
        await sentinel(server, refreshed, left_alone, hijacker)  # hijacker is still rita

        for ws in (left_alone, hijacker):
            code, reason, frames = await closed(ws, within=10)
            assert (code, reason) == (4001, "token expired")
            assert frames == []
        # The first token has expired by now; the refreshed connection still answers.
        await send(refreshed, {"type": "ping", "ref": "p"})
        assert await recv(refreshed) == {"type": "pong", "ref": "p"}
        sent = await publish(server, {"event": "still-here", "user": "rita"})
        assert (await notification(refreshed))["id"] == sent


# --- the publish API ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-key"),
        pytest.param({"Authorization": "Bearer wrong-key"}, id="wrong-key"),
        pytest.param({"Authorization": f"Basic {API_KEY}"}, id="wrong-scheme"),
        pytest.param({"Authorization": "Bearer"}, id="empty-key"),
    ],
)
async def test_publish_without_a_valid_api_key_is_401(
    server: Server, headers: dict[str, str]
) -> None:
    async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
        response = await http.post(
            f"{server.url}/publish", json={"event": "e", "broadcast": True}, headers=headers
        )
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized", "message": "missing or invalid API key"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"{not json", "body is not valid JSON", id="not-json"),
        pytest.param(b"[1, 2]", "body must be a JSON object", id="not-an-object"),
        pytest.param({"user": "x"}, "event must be a non-empty string", id="no-event"),
        pytest.param({"event": 3, "user": "x"}, "event must be a non-empty string", id="int"),
        pytest.param({"event": "e"}, "give exactly one target", id="no-target"),
        pytest.param({"event": "e", "user": "a", "topic": "t"}, "exactly one", id="two-targets"),
        pytest.param({"event": "e", "user": "a", "colour": 1}, "unknown field(s): colour", id="x"),
        pytest.param({"event": "e", "users": "abc"}, '"users" must be a list', id="users-str"),
        pytest.param({"event": "e", "broadcast": False}, '"broadcast" must be true', id="false"),
        pytest.param({"event": "e", "topic": "a b"}, "a topic name must be", id="bad-topic"),
        pytest.param({"event": "e", "user": ""}, "a user id must be", id="empty-user"),
        pytest.param({"event": "e", "user": "a", "exclude": 5}, "exclude must be", id="excl"),
    ],
)
async def test_publish_with_a_bad_body_is_400_with_a_clear_message(
    server: Server, body: Any, message: str
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
        response = await http.post(
            f"{server.url}/publish",
            content=content,
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_request"
    assert message in response.json()["message"]


async def test_publish_over_the_size_limit_is_413(server: Server) -> None:
    body = {"event": "big", "broadcast": True, "data": "x" * MAX_PUBLISH}
    async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
        response = await http.post(
            f"{server.url}/publish", json=body, headers={"Authorization": f"Bearer {API_KEY}"}
        )
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert str(MAX_PUBLISH) in response.json()["message"]


async def test_publish_returns_one_id_per_notification(server: Server) -> None:
    first = await publish(server, {"event": "a", "users": ["p1", "p2", "p3"]})
    second = await publish(server, {"event": "a", "users": ["p1", "p2", "p3"]})
    assert first != second
    assert first < second  # ids sort by time


# --- handshake ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        pytest.param(ALLOWED_ORIGIN, id="allowed"),
        pytest.param(ALLOWED_ORIGIN.upper() + "/", id="allowed-case-and-slash"),
        pytest.param(None, id="no-origin-header"),
    ],
)
async def test_an_allowed_origin_or_no_origin_is_accepted(
    server: Server, origin: str | None
) -> None:
    async with client(server, token("quinn"), origin=origin) as ws:
        assert (await welcome(ws))["user"] == "quinn"


async def test_a_disallowed_origin_is_closed_with_4003_before_any_frame(server: Server) -> None:
    async with client(server, token("quinn"), origin="https://evil.example") as ws:
        assert await closed(ws) == (4003, "origin not allowed", [])


@pytest.mark.parametrize("via", ["header", "subprotocol", "query"])
async def test_a_token_is_accepted_from_each_source(server: Server, via: str) -> None:
    async with client(server, token("ray"), via=via) as ws:
        assert ws.subprotocol == SUBPROTOCOL  # never the bearer.<jwt> entry
        frame = await welcome(ws)
        assert frame["user"] == "ray"
        assert frame["connection_id"]


async def test_the_authorization_header_wins_over_the_query_string(server: Server) -> None:
    async with connect(
        f"{server.ws_url}/ws?token=garbage",
        additional_headers={"Authorization": f"Bearer {token('sam')}"},
        open_timeout=FRAME_TIMEOUT,
    ) as ws:
        assert ws.subprotocol is None  # not offered, not selected
        assert (await welcome(ws))["user"] == "sam"


async def test_an_unknown_path_is_refused(server: Server) -> None:
    with pytest.raises(Exception, match="403"):
        async with client(server, token("sam"), path="/elsewhere"):
            pass


# --- bad frames -----------------------------------------------------------------------------


async def test_malformed_frames_get_error_frames_and_the_connection_survives(
    server: Server,
) -> None:
    async with client(server, token("tia")) as ws:
        await welcome(ws)
        for raw, code in [
            ("garbage", "bad_frame"),
            ("[1]", "bad_frame"),
            ('{"type": "dance"}', "unknown_type"),
            (b"\x00\x01binary", "bad_frame"),
            ('{"type": "subscribe"}', "bad_frame"),
            (json.dumps({"type": "ping", "pad": "x" * MAX_FRAME}), "frame_too_large"),
        ]:
            await ws.send(raw)
            frame = await recv(ws)
            assert (frame["type"], frame["code"]) == ("error", code), raw
            assert frame["message"]
        await send(ws, {"type": "ping"})
        assert await recv(ws) == {"type": "pong"}


async def test_a_frame_over_the_websocket_limit_closes_with_1009(server: Server) -> None:
    async with client(server, token("uma")) as ws, client(server, token("vic")) as bystander:
        await welcome(ws)
        await welcome(bystander)
        await ws.send("x" * (WS_MAX + 1))
        code, _reason, _frames = await closed(ws)
        assert code == 1009
        await send(bystander, {"type": "ping"})
        assert await recv(bystander) == {"type": "pong"}


async def test_ten_consecutive_bad_frames_close_with_4400_and_others_are_served(
    server: Server,
) -> None:
    async with client(server, token("wes")) as ws, client(server, token("xia")) as bystander:
        await welcome(ws)
        await welcome(bystander)
        for _ in range(10):
            await ws.send("garbage")
        code, reason, frames = await closed(ws)
        assert (code, reason) == (4400, "too many invalid frames")
        # The nine error frames already queued are sent before the close frame.
        assert [f["code"] for f in frames] == ["bad_frame"] * 9
        sent = await publish(server, {"event": "still-serving", "user": "xia"})
        assert (await notification(bystander))["id"] == sent


async def test_a_valid_frame_resets_the_bad_frame_count(server: Server) -> None:
    async with client(server, token("yan")) as ws:
        await welcome(ws)
        for _ in range(3):
            for _ in range(9):
                await ws.send("garbage")
            await send(ws, {"type": "ping"})
            frames = [await recv(ws) for _ in range(10)]
            assert frames[-1] == {"type": "pong"}


# --- shutdown -------------------------------------------------------------------------------


async def test_sigterm_closes_every_client_with_1001() -> None:
    own = start_serve("--jwt-secret", SECRET, "--api-key", API_KEY, "--allow-anonymous")
    try:
        async with client(own, token("zed")) as a, client(own) as b:
            await welcome(a)
            await welcome(b)
            os.kill(own.process.pid, signal.SIGTERM)
            for ws in (a, b):
                assert await closed(ws, within=10) == (1001, "server shutting down", [])
        returncode = await anyio.to_thread.run_sync(own.process.wait, 10)
        # uvicorn re-raises the signal it caught once it has shut down cleanly.
        assert returncode in (0, -signal.SIGTERM), own.output()
    finally:
        own.stop(signal.SIGKILL)
