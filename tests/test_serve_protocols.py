"""The uvicorn protocols ``notifykit serve`` runs (``notifykit/cli/server.py``) free a
connection by reference counting alone: nothing of it waits for the cyclic garbage collector,
which would let a server under churn grow (docs/cli.md, "The garbage collector")."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import uvicorn
import websockets
from servers import free_port

from notifykit.cli.server import GuardedHttpProtocol, GuardedWebSocketProtocol

pytestmark = [pytest.mark.anyio, pytest.mark.asyncio_only]


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accept a websocket, answer each text frame, until the client leaves."""
    assert scope["type"] == "websocket"
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        await send({"type": "websocket.send", "text": message["text"]})


REFUSED_UPGRADE = (  # websockets refuses it: no Sec-WebSocket-Key
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def alive(cls: type) -> int:
    return sum(issubclass(type(obj), cls) for obj in gc.get_objects())  # no proxy lookups


@contextlib.asynccontextmanager
async def collector_off() -> AsyncIterator[int]:
    """``echo_app`` served as ``notifykit serve`` serves (its uvicorn protocols) on a free
    port, yielded, with the cyclic collector off: what a connection does not free at once stays
    in ``gc.get_objects()``. On the way out: no connection left, no protocol object alive."""
    port = free_port()
    config = uvicorn.Config(echo_app, host="127.0.0.1", port=port, lifespan="off",
                            http=GuardedHttpProtocol, ws=GuardedWebSocketProtocol,
                            log_level="warning")  # fmt: skip
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn signals nothing
                await anyio.sleep(0.01)
        gc.collect()
        gc.disable()
        try:
            yield port
            with anyio.fail_after(10):
                while server.server_state.connections or server.server_state.tasks:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            await anyio.sleep(0.1)  # the transports' last callbacks
            assert alive(GuardedWebSocketProtocol) == 0
            assert alive(GuardedHttpProtocol) == 0
        finally:
            gc.enable()
            server.should_exit = True


async def test_a_closed_websocket_leaves_nothing_for_the_cyclic_collector() -> None:
    async with collector_off() as port:
        for n in range(5):
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as client:
                await client.send(f"hello {n}")
                assert await client.recv() == f"hello {n}"


async def test_a_refused_handshake_is_answered_closed_and_leaves_nothing_behind() -> None:
    async with collector_off() as port:
        for _ in range(3):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(REFUSED_UPGRADE)
                answer = b""
                with anyio.fail_after(5), contextlib.suppress(anyio.EndOfStream):
                    while True:  # until the server closes the socket
                        answer += await stream.receive()
                assert answer.startswith(b"HTTP/1.1 400"), answer
