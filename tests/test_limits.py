"""The limits on clients and publishers (docs/security.md#limits), in process.

Gateways are driven through the in-memory websocket (tests/memory_transport.py) on both anyio
backends; rates are measured on a clock the test moves, so nothing depends on how fast the
machine is. Each limit is shown refusing what is beyond it and accepting what is within it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from memory_transport import MemoryClient, ServerClosed, memory_websocket

from notifykit import CloseCode, Hub, JWTAuthenticator, Principal, mint_token
from notifykit.adapters.asgi.metrics import HubCollector
from notifykit.cli import SETTINGS
from notifykit.cli.serve import build_app
from notifykit.cli.settings import Settings
from notifykit.errors import ConfigurationError, InvalidNotification
from notifykit.gateway import Gateway
from notifykit.limits import ConnectionSlots, ThrottledLog
from notifykit.model import Handshake
from notifykit.testing import inbox
from notifykit.wire import SUBPROTOCOL, Error, ErrorCode, Pong, Subscribed, Welcome

pytestmark = pytest.mark.anyio

SECRET = "limits-tests-secret-0123456789abcdef"
AUTH = JWTAuthenticator(secret=SECRET)
SERVE_TIMEOUT = 10.0


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def handshake(user: str | None, **claims: Any) -> Handshake:
    if user is None:
        return Handshake(subprotocols=(SUBPROTOCOL,))
    signed = mint_token(user, secret=SECRET, claims=claims or None)
    return Handshake(headers={"authorization": f"Bearer {signed}"}, subprotocols=(SUBPROTOCOL,))


@asynccontextmanager
async def opened(
    gateway: Gateway, user: str | None = "42", **claims: Any
) -> AsyncIterator[MemoryClient]:
    """One websocket served by ``gateway``; on exit the client leaves and ``serve`` has
    returned."""
    client, transport = memory_websocket()

    async def serve() -> None:
        with anyio.fail_after(SERVE_TIMEOUT):
            await gateway.serve(transport, handshake(user, **claims))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(serve)
        try:
            yield client
        finally:
            client.disconnect()


async def welcomed(client: MemoryClient) -> Welcome:
    frame = await client.recv()
    assert isinstance(frame, Welcome), frame
    return frame


async def refused(client: MemoryClient) -> tuple[int, str]:
    """The close code and reason of a connection refused before its welcome."""
    code, reason = await client.closed()
    with pytest.raises(ServerClosed):
        await client.recv()  # nothing at all was sent: no welcome
    assert client.history == ["accept", "close"]
    return code, reason


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    async with Hub() as running:
        yield running


# --- connections per user ---------------------------------------------------------------------


async def test_a_users_connection_beyond_the_limit_is_closed_4409_without_a_welcome(
    hub: Hub,
) -> None:
    gateway = Gateway(hub, AUTH, max_user_connections=2)
    async with opened(gateway, "42") as first, opened(gateway, "42") as second:
        await welcomed(first)
        await welcomed(second)
        async with opened(gateway, "42") as third:
            code, reason = await refused(third)
        assert code == CloseCode.TOO_MANY_CONNECTIONS == 4409
        assert reason == "too many connections for this user (at most 2)"
        async with opened(gateway, "43") as other_user:
            await welcomed(other_user)
    assert hub.metrics["user_limit_refusals"] == 1


async def test_a_closed_connection_gives_its_users_slot_back(hub: Hub) -> None:
    gateway = Gateway(hub, AUTH, max_user_connections=1)
    for _ in range(3):
        async with opened(gateway, "42") as client:
            await welcomed(client)
    assert (gateway.slots.open, gateway.slots.users) == (0, 0)
    assert hub.metrics["user_limit_refusals"] == 0


async def test_concurrent_handshakes_of_one_user_cannot_exceed_the_limit(hub: Hub) -> None:
    """Ten handshakes authenticate at once (the authenticator waits for all of them): the
    limit must hold although none of them is registered yet when the others are checked."""
    all_in = anyio.Event()
    waiting = 0

    class SlowAuthenticator:
        async def authenticate(self, token: str) -> Principal:
            nonlocal waiting
            waiting += 1
            if waiting == 10:
                all_in.set()
            await all_in.wait()
            return await AUTH.authenticate(token)

    gateway = Gateway(hub, SlowAuthenticator(), max_user_connections=3)
    outcomes: list[str] = []
    all_out = anyio.Event()

    def outcome(what: str) -> None:
        outcomes.append(what)
        if len(outcomes) == 10:
            all_out.set()

    async with anyio.create_task_group() as tasks:
        for _ in range(10):

            async def one() -> None:
                async with opened(gateway, "42") as client:
                    try:
                        frame = await client.recv()
                    except ServerClosed as closed:
                        outcome(str(closed.code))
                        return
                    assert isinstance(frame, Welcome)
                    outcome("welcome")
                    await anyio.sleep_forever()

            tasks.start_soon(one)
        with anyio.fail_after(SERVE_TIMEOUT):
            await all_out.wait()
        tasks.cancel_scope.cancel()
    assert sorted(outcomes) == ["4409"] * 7 + ["welcome"] * 3


async def test_anonymous_connections_are_not_limited_per_user(hub: Hub) -> None:
    gateway = Gateway(hub, AUTH, allow_anonymous=True, max_user_connections=1)
    async with opened(gateway, None) as first, opened(gateway, None) as second:
        await welcomed(first)
        await welcomed(second)


# --- connections per gateway ------------------------------------------------------------------


async def test_a_connection_beyond_max_connections_is_closed_1013_without_a_welcome(
    hub: Hub,
) -> None:
    gateway = Gateway(hub, AUTH, max_connections=2)
    async with opened(gateway, "1") as first, opened(gateway, "2") as second:
        await welcomed(first)
        await welcomed(second)
        async with opened(gateway, "3") as third:
            assert await refused(third) == (CloseCode.TRY_AGAIN_LATER, "too many connections")
        # Checked first: a client with no valid token is not even authenticated.
        async with opened(gateway, None) as anonymous:
            assert (await refused(anonymous))[0] == CloseCode.TRY_AGAIN_LATER
    async with opened(gateway, "3") as later:
        await welcomed(later)
    assert hub.metrics["connection_limit_refusals"] == 2
    assert hub.metrics["auth_failures"] == 0
    assert gateway.slots.open == 0


async def test_refused_connections_do_not_hold_a_slot(hub: Hub) -> None:
    gateway = Gateway(hub, AUTH, max_connections=1, max_user_connections=1)
    for _ in range(5):
        async with opened(gateway, None) as no_token:  # 4001: anonymous is off
            assert (await refused(no_token))[0] == CloseCode.UNAUTHORIZED
    async with opened(gateway, "42") as client:
        await welcomed(client)
    assert gateway.slots.open == 0


# --- inbound frames per second ----------------------------------------------------------------


async def ping(client: MemoryClient, ref: str) -> Any:
    await client.send_json({"type": "ping", "ref": ref})
    return await client.recv()


RATE_LIMITED = Error(
    ErrorCode.RATE_LIMITED,
    "more than 4 frames a second (bursts of 3): frame ignored; slow down",
)


async def test_frames_beyond_the_burst_get_rate_limited_until_the_bucket_refills(
    hub: Hub,
) -> None:
    ticks = Ticks()
    gateway = Gateway(hub, AUTH, max_frame_rate=4, frame_burst=3, monotonic=ticks)
    async with opened(gateway) as client:
        await welcomed(client)
        assert [await ping(client, str(n)) for n in range(3)] == [Pong("0"), Pong("1"), Pong("2")]
        assert await ping(client, "3") == RATE_LIMITED  # not read: no ref
        # Not read means not parsed either: garbage beyond the rate is not a bad frame.
        await client.send_text("garbage")
        assert await client.recv() == RATE_LIMITED
        # 0.75 s at 4 frames a second earns three: two pay off what is owed, one is sent.
        ticks.now += 0.75
        assert await ping(client, "4") == Pong("4")
        assert await ping(client, "5") == RATE_LIMITED
    assert hub.metrics["rate_limited_frames"] == 3
    assert hub.metrics["bad_frames"] == 0
    assert hub.metrics["rate_limit_closes"] == 0


async def test_a_client_that_keeps_sending_beyond_the_rate_is_closed_4429(hub: Hub) -> None:
    ticks = Ticks()
    gateway = Gateway(hub, AUTH, max_frame_rate=4, frame_burst=3, monotonic=ticks)
    async with opened(gateway) as client:
        await welcomed(client)
        for n in range(7):
            await client.send_json({"type": "ping", "ref": str(n)})
        replies = [await client.recv() for _ in range(6)]
        assert replies == [Pong("0"), Pong("1"), Pong("2"), *[RATE_LIMITED] * 3]
        with pytest.raises(ServerClosed) as closed:
            await client.recv()  # the seventh frame gets no reply: the close
        assert (closed.value.code, closed.value.reason) == (4429, "too many frames; slow down")
    assert CloseCode.RATE_LIMITED == 4429
    assert hub.metrics["rate_limit_closes"] == 1
    assert hub.state.connection_count == 0


async def test_a_client_within_the_rate_is_never_limited(hub: Hub) -> None:
    ticks = Ticks()
    gateway = Gateway(hub, AUTH, max_frame_rate=50, frame_burst=2, monotonic=ticks)
    async with opened(gateway) as client:
        await welcomed(client)
        for n in range(300):
            ticks.now += 1 / 50
            assert await ping(client, str(n)) == Pong(str(n))
    assert hub.metrics["rate_limited_frames"] == 0


async def test_by_default_a_client_may_subscribe_to_its_100_topics_and_more_at_once(
    hub: Hub,
) -> None:
    ticks = Ticks()
    gateway = Gateway(hub, AUTH, monotonic=ticks)
    async with opened(gateway, "42", topics=["t:*"]) as client:
        await welcomed(client)
        for n in range(100):
            await client.send_json({"type": "subscribe", "topic": f"t:{n}", "ref": str(n)})
        for n in range(101):
            await client.send_json({"type": "ping", "ref": str(n)})
        replies = [await client.recv() for _ in range(201)]
        assert all(isinstance(r, Subscribed) for r in replies[:100])
        assert replies[100:200] == [Pong(str(n)) for n in range(100)]
        assert replies[200] == Error(
            "rate_limited", "more than 50 frames a second (bursts of 200): frame ignored; slow down"
        )


# --- the log ----------------------------------------------------------------------------------


async def test_a_flood_of_violations_is_logged_once_then_summed_up(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    ticks = Ticks()
    gateway = Gateway(hub, AUTH, max_user_connections=1, monotonic=ticks)
    caplog.set_level(logging.WARNING, logger="notifykit.gateway")
    async with opened(gateway, "42") as client:
        await welcomed(client)
        for _ in range(30):
            async with opened(gateway, "42") as extra:
                await refused(extra)
        lines = [m for r in caplog.records if "max_user" in (m := r.getMessage())]
        assert lines == [
            "refused a connection of user '42': it has 1, the maximum (max_user_connections)"
        ]
        ticks.now += 10
        async with opened(gateway, "42") as extra:
            await refused(extra)
    lines = [m for r in caplog.records if "max_user" in (m := r.getMessage())]
    assert len(lines) == 2
    assert lines[1].endswith("(and 29 more like it since the last such line, not logged)")
    assert hub.metrics["user_limit_refusals"] == 31


def test_the_throttled_log_keeps_each_kind_apart(caplog: pytest.LogCaptureFixture) -> None:
    ticks = Ticks()
    log = ThrottledLog(logging.getLogger("notifykit.test"), interval=5, clock=ticks)
    caplog.set_level(logging.WARNING, logger="notifykit.test")
    for _ in range(3):
        log.warning("a", "a happened")
        log.warning("b", "b happened to %s", "x")
    ticks.now += 4.9
    log.warning("a", "a happened")
    ticks.now += 0.1
    log.warning("a", "a happened")
    assert [r.getMessage() for r in caplog.records] == [
        "a happened",
        "b happened to x",
        "a happened (and 3 more like it since the last such line, not logged)",
    ]


# --- data size on publish ---------------------------------------------------------------------


async def test_data_over_max_data_bytes_is_refused_and_data_at_the_limit_is_delivered() -> None:
    async with Hub(max_data_bytes=100) as hub, inbox(hub, "42") as box:
        for at_the_limit in ("x" * 98, "é" * 49, ["y" * 96]):  # 100 bytes of JSON each
            await hub.notify_user("42", "fits", at_the_limit)
            assert (await box.next()).data == at_the_limit
        for over in ("x" * 99, "é" * 50, {"k": "z" * 93}):  # 101 bytes, 102, 101
            with pytest.raises(InvalidNotification, match="data too large"):
                await hub.notify_user("42", "too.big", over)
        await box.assert_nothing()
        assert hub.metrics["data_size_refusals"] == 3


async def test_the_data_limit_counts_data_only_not_the_rest_of_the_notification() -> None:
    async with Hub(max_data_bytes=16) as hub, inbox(hub, "42", topics=["t" * 256]) as box:
        # A 256-character event and topic make a frame far over 16 bytes; the data is 4.
        await hub.notify_topic("t" * 256, "e" * 256, "ab")
        assert (await box.next()).data == "ab"
        with pytest.raises(
            InvalidNotification, match=r"data too large: 17 bytes encoded as JSON, at most 16"
        ):
            await hub.notify_topic("t" * 256, "e" * 256, "x" * 15)


async def test_the_default_data_limit_is_64_kib() -> None:
    async with Hub() as hub:
        await hub.broadcast("fits", "x" * (64 * 1024 - 2))
        with pytest.raises(InvalidNotification, match="at most 65536"):
            await hub.broadcast("too.big", "x" * (64 * 1024 - 1))


# --- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"max_connections": 0}, "max_connections"),
        ({"max_user_connections": 0}, "max_user_connections"),
        ({"max_user_connections": 2.5}, "max_user_connections"),
        ({"max_frame_rate": 0}, "max_frame_rate"),
        ({"max_frame_rate": float("inf")}, "max_frame_rate"),
        ({"max_frame_rate": True}, "max_frame_rate"),
        ({"frame_burst": 0}, "frame_burst"),
    ],
)
def test_gateway_limits_that_cannot_work_are_refused(options: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        Gateway(Hub(), AUTH, **options)


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_a_data_limit_that_cannot_work_is_refused(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_data_bytes"):
        Hub(max_data_bytes=value)


def test_connection_slots_count_per_user_and_forget_users_without_connections() -> None:
    slots = ConnectionSlots(total=3, per_user=2)
    assert [slots.take() for _ in range(4)] == [True, True, True, False]
    assert [slots.take_user("a") for _ in range(3)] == [True, True, False]
    assert slots.take_user("b")
    assert (slots.of_user("a"), slots.of_user("b"), slots.users) == (2, 1, 2)
    slots.give_back_user("b")
    slots.give_back_user("a")
    assert (slots.of_user("a"), slots.users) == (1, 1)
    slots.give_back()
    assert slots.take()


# --- serve's settings -------------------------------------------------------------------------


def test_serve_builds_its_gateway_with_the_limit_settings() -> None:
    settings = Settings(
        max_connections=7, max_user_connections=3, max_frame_rate=2.5, frame_burst=9
    )
    gateway = build_app(Hub(), AUTH, settings).gateway
    assert (gateway.slots.total, gateway.slots.per_user) == (7, 3)
    assert (gateway.max_frame_rate, gateway.frame_burst) == (2.5, 9)
    defaults = build_app(Hub(), AUTH, Settings()).gateway
    assert (defaults.slots.total, defaults.slots.per_user) == (10_000, 100)
    assert (defaults.max_frame_rate, defaults.frame_burst) == (50.0, 200)


# --- docs/security.md -------------------------------------------------------------------------

SECURITY_DOC = Path(__file__).resolve().parent.parent / "docs" / "security.md"
LIMIT_SETTINGS = (
    "max_connections",
    "max_user_connections",
    "max_frame_rate",
    "frame_burst",
    "max_frame_bytes",
    "queue_size",
    "queue_bytes",
    "close_timeout",
    "max_publish_bytes",
    "max_data_bytes",
    "header_timeout",
    "shutdown_timeout",
    "jwt_leeway",
    "allow_origin",
)

VIOLATION_COUNTERS = (
    "connection_limit_refusals",
    "user_limit_refusals",
    "rate_limited_frames",
    "rate_limit_closes",
    "data_size_refusals",
    "origin_refusals",
    "auth_failures",
    "bad_frames",
    "slow_consumer_closes",
    "connections_aborted",
)


def test_the_security_doc_lists_every_limit_setting_close_code_and_counter() -> None:
    doc = SECURITY_DOC.read_text(encoding="utf-8")
    for dest in LIMIT_SETTINGS:
        assert dest in SETTINGS, dest
        assert f"--{dest.replace('_', '-')}" in doc, dest
    for code in CloseCode:
        if code not in (CloseCode.NORMAL, CloseCode.GOING_AWAY, CloseCode.INTERNAL_ERROR):
            assert f"`{code.value}`" in doc, code
    assert "`rate_limited`" in doc
    served = {family.name for family in HubCollector(Hub()).collect()}  # from the start
    for counter in VIOLATION_COUNTERS:
        assert f"notifykit_{counter}" in served, counter
        assert f"`notifykit_{counter}_total`" in doc, counter
