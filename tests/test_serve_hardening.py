"""``notifykit serve`` against hostile and broken clients, over raw sockets.

Each test runs a real ``notifykit serve`` and talks to it with plain sockets (or a real
websocket client): oversized and slow handshakes, overlong tokens, a client that stops reading
during a shutdown, and secrets in the logs. What the server owes each of them is in
docs/cli.md ("Limits of the HTTP layer", "Shutdown") and docs/auth.md.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

import anyio
import httpx
import pytest
from servers_e2e import (
    API_KEY,
    FRAME_TIMEOUT,
    SECRET,
    Server,
    client,
    closed,
    log_on_failure,
    start_serve,
    token,
    upgrade_request,
    welcome,
)

pytestmark = pytest.mark.e2e

KEYS = ("--jwt-secret", SECRET, "--api-key", API_KEY)
HEADER_TIMEOUT = 1.0  # the server's --header-timeout in these tests


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = start_serve(*KEYS, "--header-timeout", str(HEADER_TIMEOUT))
    yield srv
    srv.stop()


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send ``data``; the server may answer and close before it has read all of it."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


def answer(sock: socket.socket, within: float = FRAME_TIMEOUT) -> tuple[bytes, bool]:
    """Everything the server sends until it closes the socket; ``(data, closed)``, where
    ``closed`` is False if it was still open after ``within`` seconds."""
    sock.settimeout(within)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return data, False
    except ConnectionResetError:
        pass
    return data, True


def status_line(data: bytes) -> str:
    return data.partition(b"\r\n")[0].decode("latin-1")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


# --- oversized and slow handshakes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "target", "status"),
    [
        pytest.param(["Authorization: Bearer " + "a" * 20_000], "/ws", 431, id="long-header"),
        pytest.param([f"X-Filler-{i}: v" for i in range(129)], "/ws", 431, id="129-headers"),
        pytest.param(["X-Big: " + "b" * 100_000], "/ws", 431, id="100-KB-head"),
        pytest.param([], "/ws?token=" + "t" * 20_000, 414, id="long-request-line"),
    ],
)
def test_an_oversized_handshake_gets_a_4xx_and_a_closed_socket(
    request: pytest.FixtureRequest, server: Server, headers: list[str], target: str, status: int
) -> None:
    with log_on_failure(request, server), socket.create_connection(("127.0.0.1", server.port)) as s:
        send_quietly(s, upgrade_request(server.port, *headers, target=target))
        data, was_closed = answer(s)
        assert status_line(data).startswith(f"HTTP/1.1 {status} "), data[:200]
        assert was_closed


def test_many_oversized_handshakes_leave_no_socket_or_memory_behind(
    request: pytest.FixtureRequest, server: Server
) -> None:
    pid = server.process.pid
    fds_before, rss_before = open_fds(pid), rss_kib(pid)
    oversized = upgrade_request(server.port, "X-Big: " + "b" * 100_000)
    sockets = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(200)]
    try:
        with log_on_failure(request, server):
            for s in sockets:
                send_quietly(s, oversized)
            for s in sockets:
                data, was_closed = answer(s)
                assert status_line(data).startswith("HTTP/1.1 431 "), data[:200]
                assert was_closed
            # The clients still hold their ends: the server must have let go of its own.
            assert open_fds(pid) <= fds_before + 5
            assert rss_kib(pid) - rss_before < 16 * 1024  # 200 x 100 KB would be 20 MB
    finally:
        for s in sockets:
            s.close()


@pytest.mark.parametrize(
    "partial",
    [
        pytest.param(b"", id="nothing-sent"),
        pytest.param(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websock", id="half-a-head"),
    ],
)
def test_a_handshake_that_never_completes_is_cut_off_after_the_header_timeout(
    request: pytest.FixtureRequest, server: Server, partial: bytes
) -> None:
    with log_on_failure(request, server), socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(partial)
        data, was_closed = answer(s, within=HEADER_TIMEOUT + FRAME_TIMEOUT)
        assert was_closed
        assert status_line(data).startswith("HTTP/1.1 408 ")


@pytest.mark.anyio
@pytest.mark.parametrize("via", ["header", "query", "subprotocol"])
async def test_a_token_over_8192_characters_gets_the_documented_refusal(
    request: pytest.FixtureRequest, server: Server, via: str
) -> None:
    too_long = "a" * 8193  # docs/auth.md: closed 4001 "token is longer than 8192 characters"
    with log_on_failure(request, server):
        async with client(server, too_long, via=via) as ws:
            code, reason, _ = await closed(ws)
    assert (code, reason) == (4001, "token is longer than 8192 characters")


@pytest.mark.anyio
async def test_a_token_of_8192_characters_reaches_the_authenticator(
    request: pytest.FixtureRequest, server: Server
) -> None:
    padded = token("u", pad="p" * 8192)[:8192]  # the limit itself: refused only as a bad JWT
    with log_on_failure(request, server):
        async with client(server, padded) as ws:
            code, reason, _ = await closed(ws)
    assert (code, reason) == (4001, "token is not a valid JWT")


@pytest.mark.anyio
async def test_a_normal_handshake_still_works_after_the_refusals(server: Server) -> None:
    async with client(server, token("fine")) as ws:
        assert (await welcome(ws))["user"] == "fine"


def test_plain_http_heads_are_bounded_too(server: Server) -> None:
    head = f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {'b' * 100_000}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        send_quietly(s, head)
        data, was_closed = answer(s)
    assert status_line(data).startswith("HTTP/1.1 431 ")
    assert was_closed


def test_a_keep_alive_connection_gets_a_second_request_answered(server: Server) -> None:
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.settimeout(FRAME_TIMEOUT)
        for _ in range(2):
            s.sendall(get)
            data = b""
            while b"}" not in data:
                data += s.recv(65536)
            assert status_line(data) == "HTTP/1.1 200 OK"


# --- secrets in the logs -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_tokens_in_the_query_string_never_reach_the_logs(
    request: pytest.FixtureRequest,
) -> None:
    srv = start_serve(*KEYS, "--log-level", "info")  # access and websocket lines are info
    good, forged = token("logged"), token("forged", secret="another-secret-" + "x" * 40)
    try:
        with log_on_failure(request, srv):
            async with client(srv, good, via="query") as ws:
                await welcome(ws)
            async with client(srv, forged, via="query") as ws:
                assert (await closed(ws))[0] == 4001
            async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
                response = await http.get(f"{srv.url}/healthz?x=1&token={good}")
                assert response.status_code == 200
            with anyio.fail_after(FRAME_TIMEOUT):  # three lines: two websockets, one GET
                while True:
                    if (srv.stdout() + srv.stderr()).count("token=[redacted]") >= 3:
                        break
                    await anyio.sleep(0.05)
            logs = srv.stdout() + srv.stderr()
            assert "GET /healthz?x=1&token=[redacted]" in logs
            for secret in (good, forged, good.rpartition(".")[2], forged.rpartition(".")[2]):
                assert secret not in logs
    finally:
        srv.stop()
