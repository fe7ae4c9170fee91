"""The sub-app mounted inside a FastAPI app (tests/apps/fastapi_notify.py), under a real uvicorn.

The FastAPI app enters the hub in its own lifespan; its routes call ``hub.notify_user``; the
mounted app serves ``/notify/ws``, ``/notify/publish`` and ``/notify/healthz``. Users connect
with notifykit's ``NotifyClient``; the tests of close codes and of the handshake use raw
websockets.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers_e2e import (
    API_KEY,
    FRAME_TIMEOUT,
    SECRET,
    Server,
    clean_env,
    client,
    closed,
    health,
    log_on_failure,
    notify_client,
    publish,
    start_app,
    token,
    wait_for_health,
    welcome,
)

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

APPS = Path(__file__).resolve().parent / "apps"


def start_fastapi() -> Server:
    return start_app(
        "fastapi_notify:app",
        app_dir=APPS,
        health_path="/notify/healthz",
        env=clean_env(APP_JWT_SECRET=SECRET, APP_API_KEY=API_KEY),
    )


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = start_fastapi()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _server_log(request: pytest.FixtureRequest, server: Server) -> Iterator[None]:
    with log_on_failure(request, server):
        yield


async def test_an_app_route_notifies_a_user_connected_to_the_mounted_websocket(
    server: Server,
) -> None:
    async with notify_client(server, token("42"), path="/notify/ws") as user:
        assert user.user == "42"
        async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
            response = await http.post(f"{server.url}/orders/7/ship", params={"user": "42"})
        assert response.status_code == 200, response.text
        got = await user.next()
        assert (got.id, got.event, got.data) == (
            response.json()["id"],
            "order.shipped",
            {"order": 7},
        )


async def test_the_mounted_publish_api_reaches_the_mounted_websocket(server: Server) -> None:
    async with notify_client(server, token("43"), path="/notify/ws") as user:
        sent = await publish(server, {"event": "hi", "user": "43"}, prefix="/notify")
        assert (await user.next()).id == sent


async def test_the_mounted_health_counts_connections_and_users(server: Server) -> None:
    async with (
        notify_client(server, token("44"), path="/notify/ws"),
        notify_client(server, token("44"), path="/notify/ws"),
    ):
        body = await health(server, prefix="/notify")
        assert (body["status"], body["connections"], body["users"]) == ("ok", 2, 1)
    body = await wait_for_health(server, lambda h: h["connections"] == 0, prefix="/notify")
    assert body["users"] == 0
    async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
        ready = await http.get(f"{server.url}/notify/readyz")
    assert ready.status_code == 200


async def test_the_mounted_websocket_refuses_a_bad_token_with_4001(server: Server) -> None:
    async with client(server, "garbage", path="/notify/ws") as ws:
        code, _reason, frames = await closed(ws)
    assert (code, frames) == (4001, [])


async def test_the_mounted_publish_api_requires_the_key(server: Server) -> None:
    async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
        response = await http.post(
            f"{server.url}/notify/publish", json={"event": "e", "broadcast": True}
        )
    assert response.status_code == 401


async def test_no_websocket_is_served_outside_the_mount_point(server: Server) -> None:
    with pytest.raises(Exception, match="403"):
        async with client(server, token("45"), path="/ws"):
            pass


async def test_sigterm_closes_mounted_websockets_with_service_restart(
    request: pytest.FixtureRequest,
) -> None:
    # Under a host app, uvicorn itself closes open websockets with 1012 before the host's
    # lifespan closes the hub; docs/protocol.md tells clients to treat 1012 like 1001
    # (reconnect). `notifykit serve` reorders this and sends 1001 (tested in test_e2e.py).
    own = start_fastapi()
    try:
        with log_on_failure(request, own):
            async with client(own, token("46"), path="/notify/ws") as ws:
                await welcome(ws)
                os.kill(own.process.pid, signal.SIGTERM)
                code, _reason, _frames = await closed(ws, within=10)
            assert code == 1012
    finally:
        own.stop(signal.SIGKILL)
