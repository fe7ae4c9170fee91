"""Faults found by probing a running server (issue 7), each proven gone on a real server.

Every test starts ``notifykit serve`` in a subprocess and speaks to it over real sockets; the
ones about Redis freeze a real ``redis-server`` with SIGSTOP. Each failed before its fix:

* deep ``data`` was answered 503 (a ``RecursionError``) instead of 400;
* close frames waited on a presence write to a frozen Redis (10-17 s late);
* a client that stopped reading was unregistered but its socket lingered, with megabytes queued;
* the outbound bound was in frames only: a stalled client could hold 256 x 1 MB;
* a client that sent a burst before reading its welcome was closed 4008, never welcomed.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from servers import RedisServer
from servers_e2e import (
    API_KEY,
    FRAME_TIMEOUT,
    SECRET,
    SUBPROTOCOL,
    Server,
    client,
    closed,
    log_on_failure,
    metrics,
    notification,
    publish,
    recv,
    start_serve,
    token,
    welcome,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

# Notifications of up to 1 MB, as before the data limit: these faults are about what the
# server does with big ones (tests/test_e2e_limits.py tests the limit itself).
BASE_FLAGS = ("--jwt-secret", SECRET, "--api-key", API_KEY, "--max-data-bytes", "1048576")


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    running = start_serve(*BASE_FLAGS)
    try:
        with log_on_failure(request, running):
            yield running
    finally:
        running.stop()


def nested(depth: int) -> object:
    data: object = 0
    for _ in range(depth):
        data = [data]
    return data


def server_side_open(server: Server, ws: ClientConnection) -> bool:
    """Whether the server still holds the TCP connection of client ``ws`` (in any state but
    TIME_WAIT/CLOSE), from the kernel's table."""
    client_port = ws.local_address[1]
    with open("/proc/net/tcp") as table:
        lines = table.read().splitlines()[1:]
    for line in lines:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if (
            int(local.split(":")[1], 16) == server.port
            and int(remote.split(":")[1], 16) == client_port
        ):
            return state not in ("06", "07")  # TIME_WAIT, CLOSE
    return False


def rss_mib(server: Server) -> float:
    with open(f"/proc/{server.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@asynccontextmanager
async def stalled_client(server: Server, user: str) -> AsyncIterator[ClientConnection]:
    """A client that reads its welcome and then nothing: a 4 KiB receive buffer, and the
    websocket library stops reading the socket once one message waits."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    async with connect(
        f"{server.ws_url}/ws",
        sock=sock,
        additional_headers={"Authorization": f"Bearer {token(user)}"},
        subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
        max_queue=1,
        compression=None,
        open_timeout=FRAME_TIMEOUT,
        close_timeout=1,
    ) as ws:
        await welcome(ws)
        yield ws


async def publish_many(server: Server, user: str, count: int, size: int) -> int:
    """Publish ``count`` notifications of ``size`` bytes of data to ``user``; how many got 202."""
    accepted = 0
    async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
        for n in range(count):
            response = await http.post(
                f"{server.url}/publish",
                json={"event": "bulk", "user": user, "data": {"n": n, "pad": "x" * size}},
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
            accepted += response.status_code == 202
    return accepted


async def counter_reaches(server: Server, name: str, value: float, within: float = 15) -> None:
    """Poll ``/metrics`` until counter ``name`` reaches ``value`` (a server signals nothing)."""
    with anyio.fail_after(within):
        while (await metrics(server)).get(name, 0) < value:  # noqa: ASYNC110
            await anyio.sleep(0.1)


async def read_to_the_end(ws: ClientConnection) -> None:
    """Read until the connection ends (raises ``ConnectionClosed``), bounded in time."""
    with anyio.fail_after(FRAME_TIMEOUT):
        while True:
            await ws.recv()


# --- fault 2: deep data ----------------------------------------------------------------------


async def test_deeply_nested_data_is_a_400_saying_why_not_a_503(server: Server) -> None:
    async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
        for depth in (65, 970, 5_000):
            response = await http.post(
                f"{server.url}/publish",
                content=f'{{"event": "e", "user": "1", "data": {"[" * depth}0{"]" * depth}}}',
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
            assert response.status_code == 400, (depth, response.text)
            assert "deeper than" in response.json()["message"]
    # The documented limit itself is accepted.
    await publish(server, {"event": "e", "user": "1", "data": nested(63)})


# --- fault 4 and 5: a client that stops reading -----------------------------------------------


async def test_a_stalled_client_is_closed_and_its_socket_dropped_and_others_keep_receiving(
    server: Server,
) -> None:
    async with stalled_client(server, "slow") as slow, client(server, token("fast")) as fast:
        await welcome(fast)
        # 10 MB of notifications: far beyond the 1 MiB queue bound plus what the kernel holds.
        await publish_many(server, "slow", 1_000, 10_000)
        # The slow consumer's close cannot be written: after close_timeout it is dropped.
        await counter_reaches(server, "notifykit_connections_aborted_total", 1)
        counters = await metrics(server)
        assert counters["notifykit_slow_consumer_closes_total"] == 1
        assert counters["notifykit_connections"] == 1  # only the fast one is left
        # Its TCP connection is gone from the server: no socket, no buffered megabytes.
        assert not server_side_open(server, slow)
        assert server_side_open(server, fast)
        # Everyone else is unaffected.
        sent = await publish(server, {"event": "still-here", "user": "fast"})
        assert (await notification(fast))["id"] == sent
        # The stalled client, once it reads, finds its connection dropped without a close frame.
        with pytest.raises(ConnectionClosed) as ended:
            await read_to_the_end(slow)
        assert ended.value.rcvd is None


async def test_a_slow_reader_gets_4008_once_its_queue_overflows(server: Server) -> None:
    async with client(server, token("reader")) as ws:
        await welcome(ws)

        frames = 0
        ending: list[ConnectionClosed] = []

        async def read_slowly() -> None:
            nonlocal frames
            with anyio.fail_after(60):
                try:
                    while True:
                        await ws.recv()
                        frames += 1
                        await anyio.sleep(0.02)  # ~500 KB/s of 10 KB frames: slower than sent
                except ConnectionClosed as exc:
                    ending.append(exc)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read_slowly)
            await publish_many(server, "reader", 1_500, 10_000)
        rcvd = ending[0].rcvd
        assert rcvd is not None, "dropped without a close frame"
        assert rcvd.code == 4008, rcvd
        assert frames < 1_500


async def test_a_stalled_client_cannot_hold_more_than_its_byte_bound(
    request: pytest.FixtureRequest,
) -> None:
    # Without history: the server would otherwise keep the 40 MB it is sent, on purpose.
    server = start_serve(*BASE_FLAGS, "--history-size", "0")
    request.addfinalizer(server.stop)
    rss_before = rss_mib(server)
    async with stalled_client(server, "hoarder"):
        # 40 different 1 MB notifications: under the 256-frame bound, far over 1 MiB.
        await publish_many(server, "hoarder", 40, 1_000_000)
        await counter_reaches(server, "notifykit_slow_consumer_closes_total", 1)
        # Before the byte bound, all 40 MB stayed queued for as long as the client stayed.
        assert rss_mib(server) - rss_before < 30


# --- fault 7: a burst before the welcome ------------------------------------------------------


@pytest.mark.redis
async def test_a_burst_sent_before_the_welcome_still_gets_the_welcome_first(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> None:
    # With Redis, registering takes a round trip: the burst is buffered by then.
    # A burst of 1,000 frames is within the rate limit only with a burst of 1,000.
    server = start_serve(*BASE_FLAGS, "--redis-url", redis_server.url, "--frame-burst", "1000")
    try:
        with log_on_failure(request, server):
            async with client(server, token("bursty")) as ws:
                # All frames in one write, so that the server finds them buffered at once.
                for n in range(1_000):
                    ws.protocol.send_text(json.dumps({"type": "ping", "ref": str(n)}).encode())
                ws.transport.write(b"".join(ws.protocol.data_to_send()))
                assert (await recv(ws))["type"] == "welcome"
                pongs = [await recv(ws) for _ in range(1_000)]
                assert [p["ref"] for p in pongs] == [str(n) for n in range(1_000)]
                assert all(p["type"] == "pong" for p in pongs)
    finally:
        server.stop()


# --- fault 3: closes never wait on Redis ------------------------------------------------------


@pytest.fixture
def frozen_redis_server(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> Iterator[tuple[Server, RedisServer]]:
    running = start_serve(*BASE_FLAGS, "--redis-url", redis_server.url, "--presence-ttl", "30")
    try:
        with log_on_failure(request, running):
            yield running, redis_server
    finally:
        redis_server.resume()
        running.stop()


CLOSE_BOUND = 3.0  # seconds; before the fix a frozen Redis delayed these closes by 10-17 s


@pytest.mark.redis
async def test_a_bad_frame_close_does_not_wait_for_a_frozen_redis(
    frozen_redis_server: tuple[Server, RedisServer],
) -> None:
    server, redis = frozen_redis_server
    async with client(server, token("u1")) as ws:
        await welcome(ws)
        redis.pause()
        for _ in range(10):
            await ws.send("not json")
        code, _, _ = await closed(ws, within=CLOSE_BOUND)
        assert code == 4400


@pytest.mark.redis
async def test_token_expiry_closes_at_once_with_a_frozen_redis(
    frozen_redis_server: tuple[Server, RedisServer],
) -> None:
    server, redis = frozen_redis_server
    async with client(server, token("u2", ttl=2)) as ws:
        await welcome(ws)
        redis.pause()
        code, reason, _ = await closed(ws, within=2 + CLOSE_BOUND)
        assert (code, reason) == (4001, "token expired")


@pytest.mark.redis
async def test_shutdown_sends_1001_at_once_with_a_frozen_redis(
    frozen_redis_server: tuple[Server, RedisServer],
) -> None:
    server, redis = frozen_redis_server
    async with client(server, token("u3")) as ws:
        await welcome(ws)
        redis.pause()
        server.process.terminate()
        code, _, _ = await closed(ws, within=CLOSE_BOUND)
        assert code == 1001
