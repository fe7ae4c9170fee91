"""``notifykit serve`` shuts down in bounded time, whatever its clients do (docs/cli.md,
"Shutdown"): a client that stopped reading cannot hold the process, and the others get 1001."""

from __future__ import annotations

import math
import signal
import socket
import time

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

SHUTDOWN_TIMEOUT = 1.0
CLOSE_TIMEOUT = 0.5
BOUND = SHUTDOWN_TIMEOUT + CLOSE_TIMEOUT + math.ceil(CLOSE_TIMEOUT) + 0.1  # docs/cli.md
EXIT_SLACK = 3.0
"""Time for the interpreter to exit after the sequence, on a loaded machine. Without the
bounded sequence this shutdown took 12 s (the close timeout plus uvicorn's 10 s grace)."""


def stalled_client(server: Server, user: str) -> socket.socket:
    """A websocket client with a tiny receive buffer that completes its handshake and then
    never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(upgrade_request(server.port, f"Authorization: Bearer {token(user)}"))
    sock.settimeout(FRAME_TIMEOUT)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # byte by byte: nothing after the head is read
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def server_send_queue(server: Server, client_port: int) -> int:
    """Bytes the server's socket to ``client_port`` has queued in the kernel, unsent."""
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if (
                int(local.split(":")[1], 16) == server.port
                and int(remote.split(":")[1], 16) == client_port
            ):
                return int(fields[4].split(":")[0], 16)
    return 0


@pytest.mark.anyio
async def test_a_stalled_client_cannot_hold_the_shutdown_and_the_others_get_1001(
    request: pytest.FixtureRequest,
) -> None:
    srv = start_serve(
        "--jwt-secret",
        SECRET,
        "--api-key",
        API_KEY,
        "--queue-size",
        "1000",  # the stalled client is never closed as a slow consumer: its queue holds
        "--queue-bytes",
        "100000000",
        "--shutdown-timeout",
        str(SHUTDOWN_TIMEOUT),
        "--close-timeout",
        str(CLOSE_TIMEOUT),
    )
    stalled = stalled_client(srv, "stalled")
    try:
        with log_on_failure(request, srv):
            async with client(srv, token("normal")) as normal:
                await welcome(normal)
                async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
                    for _ in range(400):  # 12.8 MB for a client that reads nothing
                        response = await http.post(
                            f"{srv.url}/publish",
                            json={"event": "big", "user": "stalled", "data": "x" * 32_000},
                            headers={"Authorization": f"Bearer {API_KEY}"},
                        )
                        assert response.status_code == 202, response.text
                client_port = stalled.getsockname()[1]
                with anyio.fail_after(FRAME_TIMEOUT):
                    while True:
                        if server_send_queue(srv, client_port) > 0:  # the server is stuck
                            break
                        await anyio.sleep(0.05)

                srv.process.send_signal(signal.SIGTERM)
                started = time.monotonic()
                code, reason, _ = await closed(normal)
                assert (code, reason) == (1001, "server shutting down")
                returncode = await anyio.to_thread.run_sync(srv.process.wait, 30)
                elapsed = time.monotonic() - started
        assert returncode == -signal.SIGTERM
        assert elapsed < BOUND + EXIT_SLACK, f"shutdown took {elapsed:.1f} s"
    finally:
        stalled.close()
        srv.stop()
