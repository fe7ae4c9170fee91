"""Each limit of docs/security.md#limits on a real ``notifykit serve``, over real sockets.

The servers run with small limits (``--max-user-connections 2``, ``--frame-burst 3``...) so
that a test reaches them in a few frames; the frame rate refills at 0.01 frames a second, so
no pause of the machine can let a frame through that the test expects refused.
"""

from __future__ import annotations

from collections.abc import Iterator

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
    metrics,
    publish,
    recv,
    send,
    start_serve,
    token,
    welcome,
)

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

BASE_FLAGS = ("--jwt-secret", SECRET, "--api-key", API_KEY)


@pytest.fixture(scope="module")
def limited() -> Iterator[Server]:
    running = start_serve(
        *BASE_FLAGS,
        "--max-user-connections",
        "2",
        "--max-frame-rate",
        "0.01",
        "--frame-burst",
        "3",
        "--max-data-bytes",
        "100",
    )
    yield running
    running.stop()


@pytest.fixture
def server(request: pytest.FixtureRequest, limited: Server) -> Iterator[Server]:
    with log_on_failure(request, limited):
        yield limited


async def test_a_users_third_connection_is_closed_4409_without_a_welcome(server: Server) -> None:
    async with client(server, token("twice")) as first, client(server, token("twice")) as second:
        await welcome(first)
        await welcome(second)
        async with client(server, token("twice")) as third:
            code, reason, frames = await closed(third)
        assert (code, frames) == (4409, [])
        assert reason == "too many connections for this user (at most 2)"
        async with client(server, token("someone-else")) as other:
            await welcome(other)
    assert (await metrics(server))["notifykit_user_limit_refusals_total"] >= 1


async def test_frames_beyond_the_rate_get_rate_limited_then_4429(server: Server) -> None:
    async with client(server, token("chatty")) as ws:
        await welcome(ws)
        for n in range(7):
            await send(ws, {"type": "ping", "ref": str(n)})
        code, reason, frames = await closed(ws)
    assert [f["type"] for f in frames] == ["pong"] * 3 + ["error"] * 3
    assert {f.get("code") for f in frames[3:]} == {"rate_limited"}
    assert (code, reason) == (4429, "too many frames; slow down")
    counters = await metrics(server)
    assert counters["notifykit_rate_limit_closes_total"] >= 1
    assert counters["notifykit_rate_limited_frames_total"] >= 4


async def test_a_client_that_slows_down_after_rate_limited_keeps_its_connection(
    server: Server,
) -> None:
    async with client(server, token("polite")) as ws:
        await welcome(ws)
        for n in range(4):
            await send(ws, {"type": "ping", "ref": str(n)})
        replies = [await recv(ws) for _ in range(4)]
        assert [r["type"] for r in replies] == ["pong"] * 3 + ["error"]
        # It stops; the connection stays and still receives notifications.
        sent = await publish(server, {"event": "still-here", "user": "polite"})
        assert (await recv(ws))["id"] == sent


async def test_data_over_max_data_bytes_is_a_400_and_data_at_the_limit_is_sent(
    server: Server,
) -> None:
    async with client(server, token("reader")) as ws:
        await welcome(ws)
        sent = await publish(server, {"event": "fits", "user": "reader", "data": "x" * 98})
        assert (await recv(ws))["id"] == sent
        async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
            response = await http.post(
                f"{server.url}/publish",
                json={"event": "too.big", "user": "reader", "data": "é" * 50},
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
        assert response.status_code == 400, response.text
        assert response.json() == {
            "error": "bad_request",
            "message": "data too large: 102 bytes encoded as JSON, at most 100",
        }
        sentinel = await publish(server, {"event": "sentinel", "user": "reader"})
        assert (await recv(ws))["id"] == sentinel  # nothing came before it
    assert (await metrics(server))["notifykit_data_size_refusals_total"] >= 1


async def test_a_connection_beyond_max_connections_is_closed_1013(
    request: pytest.FixtureRequest,
) -> None:
    server = start_serve(*BASE_FLAGS, "--max-connections", "2")
    try:
        with log_on_failure(request, server):
            # Every violation counter is served, at 0, before the first violation.
            counters = await metrics(server)
            for counter in ("connection_limit", "user_limit", "data_size", "rate_limit"):
                found = [v for k, v in counters.items() if k.startswith(f"notifykit_{counter}")]
                assert found, counter
                assert set(found) == {0}, counter
            async with client(server, token("a")) as a, client(server, token("b")) as b:
                await welcome(a)
                await welcome(b)
                async with client(server, token("c")) as c:
                    assert await closed(c) == (1013, "too many connections", [])
            assert (await metrics(server))["notifykit_connection_limit_refusals_total"] == 1
            # One refusal is one warning, and the log says which setting to raise.
            assert server.stderr().count("(max_connections)") == 1
    finally:
        server.stop()


def serve_after(shell: str, *flags: str) -> Server:
    """``notifykit serve <flags>`` started by ``sh -c '<shell> && exec ...'`` (e.g. a
    ``ulimit``), on a free port; returns once ``/healthz`` answers."""
    launcher = ("sh", "-c", f'{shell} && exec "$0" "$@"')
    return start_serve(*BASE_FLAGS, *flags, launcher=launcher)


def test_serve_warns_when_the_open_file_limit_cannot_fit_max_connections() -> None:
    server = serve_after("ulimit -n 300", "--max-connections", "1000")  # soft and hard
    try:
        stderr = server.stderr()
    finally:
        server.stop()
    assert "notifykit: warning: --max-connections 1000 needs about 1256 open files" in stderr
    assert "may open 300" in stderr


def test_serve_raises_its_open_file_limit_to_fit_max_connections() -> None:
    server = serve_after("ulimit -S -n 300", "--max-connections", "1000")  # soft only
    try:
        with open(f"/proc/{server.process.pid}/limits") as limits:
            line = next(row for row in limits if row.startswith("Max open files"))
        stderr = server.stderr()
    finally:
        server.stop()
    assert line.split()[3] == "1256", line  # the soft limit, raised from 300
    assert "warning" not in stderr


async def test_a_frame_far_over_the_transport_limit_gets_its_1009_close_frame(
    server: Server,
) -> None:
    """The refused frame is still arriving when the server closes: before the server read and
    discarded the rest, the kernel's reset destroyed the close frame half the time."""
    for attempt in range(10):
        async with client(server, token(f"oversized-{attempt}")) as ws:
            await welcome(ws)
            await ws.send("x" * 4_000_000)
            code, _, _ = await closed(ws)
            assert code == 1009, attempt
