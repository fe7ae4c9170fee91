"""What ``POST /publish`` promises while an instance comes back from a Redis restart.

A real ``notifykit serve`` process on a real Redis (and, for the same test, on a real Redis
Cluster whose master restarts), a real websocket client of that instance, and publishes over
HTTP while the instance is still reconnecting and resubscribing: 202 means the notification
reaches the instance's own client; what cannot be delivered is refused with 503.

The window is made wide on purpose: Redis stays down until the subscriber's reconnection
backoff has grown to seconds, as it does in a real outage, so the publisher's connection (which
reconnects on the first publish) comes back long before the subscriber's.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from redis.crc import key_slot
from servers import RedisClusterServers, RedisServer
from servers_e2e import (
    API_KEY,
    FRAME_TIMEOUT,
    SECRET,
    Server,
    client,
    log_on_failure,
    metrics,
    notification,
    publish,
    start_serve,
    token,
    welcome,
)

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.redis]

FAILURES_BEFORE_RESTART = 6
"""Connection attempts the subscriber makes (and fails) before Redis comes back: by then its
backoff sleeps 3.2 to 6.4 s before the next one (10 s at most)."""
WINDOW_BOUND = 40.0  # seconds: the subscriber resubscribes well within this after the restart


@dataclass
class Outage:
    """One instance, the Redis node that serves ``user``'s channel, and how to restart it."""

    instance: Server
    node: RedisServer
    user: str
    restart: Callable[[], None]  # start the node again and wait until it serves


def instance_on(flag: str, url: str, prefix: str) -> Server:
    return start_serve(
        "--jwt-secret", SECRET,
        "--api-key", API_KEY,
        flag, url,
        "--redis-prefix", prefix,
        "--presence-ttl", "3",
    )  # fmt: skip


@pytest.fixture(params=["redis", "cluster"])
def outage(request: pytest.FixtureRequest) -> Iterator[Outage]:
    prefix = f"restart-{secrets.token_hex(3)}"
    user = "ada"
    if request.param == "redis":
        node: RedisServer = request.getfixturevalue("redis_server")
        instance = instance_on("--redis-url", node.url, prefix)
        restart: Callable[[], None] = node.restart  # already answering once it returns
    else:
        cluster: RedisClusterServers = request.getfixturevalue("fresh_redis_cluster")
        node = cluster.owner_of(key_slot(f"{prefix}:u:{user}".encode()))
        instance = instance_on("--redis-cluster-url", cluster.url, prefix)

        def restart() -> None:
            node.restart()
            cluster.wait_until_ok()

    try:
        yield Outage(instance, node, user, restart)
    finally:
        instance.stop()


async def post_publish(server: Server, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=FRAME_TIMEOUT * 3) as http:
        return await http.post(
            f"{server.url}/publish", json=body, headers={"Authorization": f"Bearer {API_KEY}"}
        )


async def metric(server: Server, name: str) -> float:
    """The propagator's counter ``name`` (``notifykit_propagator_<name>_total``)."""
    return (await metrics(server))[f"notifykit_propagator_{name}_total"]


async def until_metric(server: Server, name: str, least: float, within: float = 30.0) -> None:
    """Poll ``/metrics`` (bounded) until the propagator's ``name`` reaches ``least``."""
    with anyio.fail_after(within):
        while await metric(server, name) < least:  # noqa: ASYNC110 - a counter signals nothing
            await anyio.sleep(0.05)


@pytest.mark.timeout(120)
async def test_after_a_redis_restart_a_202_reaches_the_instances_own_client_or_is_a_503(
    request: pytest.FixtureRequest, outage: Outage
) -> None:
    instance, node, user = outage.instance, outage.node, outage.user
    with log_on_failure(request, instance):
        async with client(instance, token(user)) as ws:
            await welcome(ws)
            sent = await publish(instance, {"event": "before", "user": user})
            assert (await notification(ws))["id"] == sent

            failures = await metric(instance, "connect_failures")
            node.kill()
            await until_metric(instance, "connect_failures", failures + FAILURES_BEFORE_RESTART)
            reconnects = await metric(instance, "reconnects")
            outage.restart()

            accepted: list[str] = []
            refused: list[str] = []
            in_window = 0
            with anyio.fail_after(WINDOW_BOUND):
                while True:
                    resubscribed = await metric(instance, "reconnects") > reconnects
                    if not resubscribed:
                        in_window += 1
                    response = await post_publish(
                        instance, {"event": "during", "user": user, "data": len(accepted)}
                    )
                    assert response.status_code in (202, 503), response.text
                    if response.status_code == 202:
                        accepted.append(response.json()["id"])
                    else:
                        assert response.json()["error"] == "unavailable", response.text
                        refused.append(response.json()["message"])
                    if resubscribed and accepted:
                        break
                    await anyio.sleep(0.05)  # pacing a bounded loop, not a wait
            assert in_window > 0, "no publish happened before the subscriber came back"

            last = await publish(instance, {"event": "last", "user": user})
            received: list[str] = []
            while not received or received[-1] != last:
                received.append((await notification(ws))["id"])
            lost = [
                notification_id for notification_id in accepted if notification_id not in received
            ]
            assert not lost, (
                f"{len(lost)} of {len(accepted)} notifications answered 202 never reached the "
                f"instance's own client ({len(refused)} answered 503, {in_window} published "
                "before the subscriber came back)"
            )
