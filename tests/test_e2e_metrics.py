"""``GET /metrics`` of a real ``notifykit serve``, after real clients connected, were refused,
sent a bad frame and received notifications published over HTTP; read back with
prometheus_client's own parser."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from servers_e2e import (
    API_KEY,
    FRAME_TIMEOUT,
    SECRET,
    Server,
    client,
    closed,
    log_on_failure,
    notification,
    publish,
    recv,
    start_serve,
    token,
    wait_for_health,
    welcome,
)
from test_metrics import check_exposition, closed_codes, histogram, sample

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

ORIGIN = "https://app.example"


@pytest.fixture
def server() -> Iterator[Server]:
    srv = start_serve("--jwt-secret", SECRET, "--api-key", API_KEY, "--allow-origin", ORIGIN)
    yield srv
    srv.stop()


async def scrape(server: Server) -> dict[str, Metric]:
    async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
        response = await http.get(f"{server.url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    check_exposition(response.text)
    return {family.name: family for family in text_string_to_metric_families(response.text)}


async def test_the_metrics_of_a_served_instance_are_what_its_clients_did(
    request: pytest.FixtureRequest, server: Server
) -> None:
    with log_on_failure(request, server):
        async with client(server, "not-a-jwt") as refused:
            assert (await closed(refused))[0] == 4001
        async with client(server, token("42"), origin="https://evil.example") as refused:
            assert (await closed(refused))[0] == 4003
        async with (
            client(server, token("42"), origin=ORIGIN) as a,
            client(server, token("42"), via="query") as b,
            client(server, token("7"), via="subprotocol") as c,
        ):
            for ws in (a, b, c):
                await welcome(ws)
            await a.send("not json")
            assert (await recv(a))["type"] == "error"
            await publish(server, {"event": "to-42", "user": "42"})
            await publish(server, {"event": "to-7", "user": "7"})
            await publish(server, {"event": "to-nobody", "user": "nobody"})
            for ws in (a, b, c):
                await notification(ws)

            found = await scrape(server)
            assert sample(found, "notifykit_connections") == 3
            assert sample(found, "notifykit_users_online") == 2
            assert sample(found, "notifykit_healthy") == 1
            assert sample(found, "notifykit_connections_opened") == 3
            assert sample(found, "notifykit_auth_failures") == 1
            assert sample(found, "notifykit_origin_refusals") == 1
            assert sample(found, "notifykit_bad_frames") == 1
            assert sample(found, "notifykit_notifications_published") == 3
            assert sample(found, "notifykit_notifications_delivered") == 3
            assert histogram(found, "notifykit_delivery_latency_seconds")[1] == 2
            assert sample(found, "notifykit_propagator_subscriptions") == 4  # u:42 u:7 auth all
            assert sample(found, "notifykit_history_entries") == 3  # each notification, kept

        await wait_for_health(server, lambda h: h["connections"] == 0)
        found = await scrape(server)
        assert sample(found, "notifykit_connections") == 0
        assert closed_codes(found) == {"client": 3}  # each client closed it
        assert sample(found, "notifykit_propagator_subscriptions") == 0
        for reason in ("malformed", "slow_consumer", "connection_ended"):
            assert sample(found, "notifykit_notifications_dropped", reason=reason) == 0
