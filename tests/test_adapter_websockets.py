"""The ``websockets`` adapter in process: what the contract suite does not show from outside.

A server from ``notifykit.adapters.websockets.serve`` on a free port, real ``websockets``
clients, the in-memory hub.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from notifykit import Hub, JWTAuthenticator, mint_token
from notifykit.adapters.websockets import NotifyServer, serve
from notifykit.protocols import Transport

# The websockets library and Django Channels run on asyncio only.
pytestmark = [pytest.mark.anyio, pytest.mark.asyncio_only]

SECRET = "websockets-adapter-tests-0123456789"
AUTH = JWTAuthenticator(secret=SECRET)


@asynccontextmanager
async def user(server: NotifyServer, name: str, **options: Any) -> AsyncIterator[ClientConnection]:
    token = mint_token(name, secret=SECRET)
    async with connect(
        f"ws://127.0.0.1:{server.port}/ws",
        additional_headers={"Authorization": f"Bearer {token}"},
        subprotocols=[Subprotocol("notifykit.v1")],
        open_timeout=5,
        **options,
    ) as ws:
        yield ws


async def frame(ws: ClientConnection) -> dict[str, Any]:
    with anyio.fail_after(5):
        received: dict[str, Any] = json.loads(await ws.recv())
        return received


def test_the_transport_implements_the_protocol() -> None:
    from notifykit.adapters.websockets import WebsocketsTransport

    assert issubclass(WebsocketsTransport, Transport)  # type: ignore[misc]


async def test_a_fan_out_reaches_plain_and_compressed_connections_alike() -> None:
    async with (
        Hub(max_data_bytes=1024 * 1024) as hub,  # a frame bigger than 64 KiB
        serve(hub, AUTH, port=0, websockets_options={"compression": "deflate"}) as server,
        user(server, "42", compression=None) as plain,
        user(server, "42", compression="deflate") as deflated,
    ):
        assert deflated.protocol.extensions  # negotiated: this one takes the protocol's path
        assert not plain.protocol.extensions
        for ws in (plain, deflated):
            assert (await frame(ws))["type"] == "welcome"
        big = {"text": "é" * 70_000}
        sent = [await hub.notify_user("42", "e", data) for data in ({"n": 1}, big)]
        for ws in (plain, deflated):
            assert [(await frame(ws))["id"] for _ in sent] == sent


async def test_serve_runs_a_hub_it_was_given_stopped_and_stops_it() -> None:
    hub = Hub()
    async with serve(hub, AUTH, port=0) as server, user(server, "7") as ws:
        assert hub.running
        await frame(ws)
    assert not hub.running


async def test_serve_leaves_a_running_hub_to_its_owner() -> None:
    async with Hub() as hub:
        async with serve(hub, AUTH, port=0) as server, user(server, "7") as ws:
            await frame(ws)
        assert hub.running
        assert hub.state.connection_count == 0  # its connections are closed all the same


async def test_healthz_reports_the_hub_and_other_paths_are_not_found() -> None:
    async with Hub() as hub, serve(hub, AUTH, port=0) as server, user(server, "7") as ws:
        await frame(ws)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            health = await http.get("/healthz")
            assert health.status_code == 200
            assert health.headers["content-type"] == "application/json"
            assert health.json() == {"status": "ok", "connections": 1, "users": 1}
            assert (await http.get("/elsewhere")).status_code == 404
