"""The hub's presence API and GET /presence: who is online, across instances."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
import pytest

from notifykit import Hub, JWTAuthenticator, PropagationError
from notifykit.adapters.asgi import NotifyApp
from notifykit.memory import MemoryBus, MemoryPresence, MemoryPropagator
from notifykit.testing import inbox

pytestmark = pytest.mark.anyio

SECRET = "s" * 32


def two_instances() -> tuple[Hub, Hub]:
    bus, presence = MemoryBus(), MemoryPresence()
    return (
        Hub(MemoryPropagator(bus), presence=presence),
        Hub(MemoryPropagator(bus), presence=presence.peer()),
    )


async def test_a_user_connected_on_one_instance_is_online_on_every_instance() -> None:
    a, b = two_instances()
    async with a, b:
        assert not await b.is_online("42")
        async with inbox(a, "42") as box:
            assert await b.is_online("42")
            assert await b.connections_of("42") == [box.connection_id]
            assert await b.online_users() == ["42"]
            assert await b.online_count() == 1
        assert not await b.is_online("42")
        assert await b.online_count() == 0


async def test_a_user_stays_online_until_their_last_connection_anywhere_leaves() -> None:
    a, b = two_instances()
    async with a, b:
        async with inbox(a, "42") as first:
            async with inbox(b, "42") as second:
                ids = sorted([first.connection_id, second.connection_id])
                assert sorted(await a.connections_of("42")) == ids
            assert await a.connections_of("42") == [first.connection_id]
        assert not await a.is_online("42")


async def test_anonymous_connections_are_not_in_presence() -> None:
    async with Hub() as hub, inbox(hub, None):
        assert await hub.online_count() == 0


class FailingPresence(MemoryPresence):
    """A presence whose backend is down for writes."""

    async def connected(self, user_id: str, connection_id: str) -> None:
        raise PropagationError("presence backend unreachable")


async def test_a_presence_outage_does_not_stop_delivery() -> None:
    async with Hub(presence=FailingPresence()) as hub, inbox(hub, "42") as box:
        await hub.notify_user("42", "still.delivered")
        assert (await box.next()).event == "still.delivered"


async def test_hub_statistics_include_presence_counters() -> None:
    async with Hub() as hub, inbox(hub, "42"):
        stats: Mapping[str, float] = hub.statistics()
        assert any(name.startswith("presence_") for name in stats)


# --- GET /presence ---------------------------------------------------------------------


def client(hub: Hub) -> httpx.AsyncClient:
    app = NotifyApp(hub, JWTAuthenticator(secret=SECRET), api_key="key")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://nk")


AUTH = {"Authorization": "Bearer key"}


async def test_get_presence_of_a_user_says_online_and_how_many_connections() -> None:
    async with Hub() as hub, client(hub) as http:
        async with inbox(hub, "42"), inbox(hub, "42"):
            reply = await http.get("/presence/42", headers=AUTH)
            assert reply.status_code == 200
            assert reply.json() == {"user": "42", "online": True, "connections": 2}
            assert (await http.get("/presence", headers=AUTH)).json() == {"online": 1}
        reply = await http.get("/presence/42", headers=AUTH)
        assert reply.json() == {"user": "42", "online": False, "connections": 0}


async def test_get_presence_needs_the_api_key() -> None:
    async with Hub() as hub, client(hub) as http:
        assert (await http.get("/presence/42")).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await http.get("/presence", headers=wrong)).status_code == 401


class UnreachablePresence(MemoryPresence):
    """A presence whose backend is down for reads."""

    async def connections_of(self, user_id: str) -> list[str]:
        raise PropagationError("presence backend unreachable")


async def test_get_presence_answers_503_when_the_backend_is_unreachable() -> None:
    async with Hub(presence=UnreachablePresence()) as hub, client(hub) as http:
        reply = await http.get("/presence/42", headers=AUTH)
        assert reply.status_code == 503
        assert "unavailable" in reply.json()["message"]
