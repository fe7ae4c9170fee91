"""Many instances, one deployment: ``notifykit serve`` processes sharing a real Redis.

Three instances started with ``--redis-url`` (and, for the same tests, ``--redis-cluster-url``
on a real 3-master Redis Cluster) serve websocket clients; notifications are published through
one instance's HTTP API, or through the Python API of a separate process that only publishes,
and must reach the user wherever the user is connected — and nowhere else.

Absence is proven with a sentinel broadcast: delivery to one connection is in publish order, so
a connection that must not receive a notification sees the sentinel as its next frame. Counting
frames up to the sentinel proves "exactly once". Then what a single Redis must survive: a restart
under connected clients, and being down when an instance starts.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from servers import RedisServer
from servers_e2e import (
    API_KEY,
    FRAME_TIMEOUT,
    SECRET,
    Server,
    clean_env,
    client,
    health,
    log_on_failure,
    metrics,
    notification,
    publish,
    recv,
    send,
    sentinel,
    start_serve,
    start_serves,
    token,
    wait_for_health,
    welcome,
)

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.redis]

PRESENCE_TTL = "3"  # seconds: heartbeats every second, so presence recovers fast after outages
RECOVERY_TIMEOUT = 20.0  # the propagator's reconnection backoff is capped at 10 s

PUBLISHER = """
import asyncio, sys
from notifykit import Hub
from notifykit.redis import RedisClusterPropagator, RedisPropagator

async def main() -> None:
    backend, url, prefix, target, event = sys.argv[1:]
    propagator = (RedisClusterPropagator if backend == "cluster" else RedisPropagator)(
        url, prefix=prefix
    )
    async with Hub(propagator) as hub:
        if target == "*":
            print(await hub.broadcast(event, {"via": "python"}))
        else:
            print(await hub.notify_user(target, event, {"via": "python"}))

asyncio.run(main())
"""
"""A process that only publishes: a hub on the deployment's Redis, with no connection."""


@dataclass
class Deployment:
    """Instances sharing one Redis (``backend`` "redis") or Redis Cluster ("cluster")."""

    backend: str
    url: str
    prefix: str
    nodes: list[RedisServer]
    instances: list[Server]

    @property
    def url_flag(self) -> str:
        return "--redis-url" if self.backend == "redis" else "--redis-cluster-url"

    def instance_id(self, index: int) -> str:
        """The ``--instance-id`` of ``instances[index]``."""
        return f"{self.prefix}-{index + 1}"

    def flags(self, instance_id: str) -> list[str]:
        return [
            "--jwt-secret", SECRET,
            "--api-key", API_KEY,
            "--allow-anonymous",
            self.url_flag, self.url,
            "--redis-prefix", self.prefix,
            "--instance-id", instance_id,
            "--presence-ttl", PRESENCE_TTL,
        ]  # fmt: skip

    def start(self, count: int = 3) -> None:
        self.instances = start_serves(*(self.flags(self.instance_id(i)) for i in range(count)))

    def stop(self) -> None:
        for server in self.instances:
            server.stop()

    def presence_members(self, user: str) -> set[str]:
        """The ``<instance id>/<connection id>`` entries Redis holds for ``user``."""
        members: set[str] = set()
        for node in self.nodes:  # on a cluster, each node lists only its own keys
            for key in node.command("KEYS", f"{self.prefix}:presence:*:u:{user}"):
                members.update(m.decode() for m in node.command("ZRANGE", key, 0, -1))
        return members


def unique_prefix(name: str) -> str:
    """A channel prefix no other test uses (tests share the session's Redis Cluster)."""
    return f"{name}-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the module's shared deployment."""
    server = RedisServer(tmp_path_factory.mktemp("redis-multi"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["redis", "cluster"])
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """Three instances on one Redis, then the same on the local 3-master Redis Cluster."""
    if request.param == "redis":
        redis: RedisServer = request.getfixturevalue("shared_redis")
        nodes = [redis]
    else:
        nodes = request.getfixturevalue("redis_cluster").nodes
    deployed = Deployment(request.param, nodes[0].url, unique_prefix("multi"), nodes, [])
    deployed.start()
    try:
        yield deployed
    finally:
        deployed.stop()


@pytest.fixture(autouse=True)
def _instance_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    deployed = (
        request.getfixturevalue("deployment") if "deployment" in request.fixturenames else None
    )
    with log_on_failure(request, *(deployed.instances if deployed else ())):
        yield


# --- helpers ------------------------------------------------------------------------------


async def ids_until(ws: Any, last_id: str) -> list[str]:
    """The ids of the notifications before the one with ``last_id`` (each wait bounded)."""
    ids = []
    while (frame := await notification(ws))["id"] != last_id:
        ids.append(frame["id"])
    return ids


async def publish_from_python(deployed: Deployment, target: str, event: str) -> str:
    """Run the publish-only process (``target`` a user id, or "*" to broadcast); its id."""
    argv = [sys.executable, "-c", PUBLISHER, deployed.backend, deployed.url, deployed.prefix]
    with anyio.fail_after(30):
        result = await anyio.run_process([*argv, target, event], env=clean_env(), check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().strip()


async def post_publish(server: Server, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=FRAME_TIMEOUT * 3) as http:
        return await http.post(
            f"{server.url}/publish", json=body, headers={"Authorization": f"Bearer {API_KEY}"}
        )


async def presence(server: Server, user: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
        response = await http.get(
            f"{server.url}/presence/{user}", headers={"Authorization": f"Bearer {API_KEY}"}
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def presence_until(
    server: Server, user: str, want: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll ``GET /presence/<user>`` until ``want(body)`` (bounded: presence has no events)."""
    with anyio.fail_after(RECOVERY_TIMEOUT):
        while not want(body := await presence(server, user)):  # noqa: ASYNC110
            await anyio.sleep(0.05)
    return body


async def readyz(server: Server) -> int:
    async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
        return (await http.get(f"{server.url}/readyz")).status_code


async def welcome_all(*sockets: Any) -> list[str]:
    """Receive every socket's ``welcome``; their connection ids."""
    return [(await welcome(ws))["connection_id"] for ws in sockets]


# --- one deployment, many instances ---------------------------------------------------------


async def test_a_user_on_instances_1_and_3_receives_what_instance_2_or_a_python_process_sends(
    deployment: Deployment,
) -> None:
    one, two, three = deployment.instances
    async with (
        client(one, token("ada")) as ada_on_1,
        client(three, token("ada")) as ada_on_3,
        client(one, token("bob")) as bob_on_1,
        client(two, token("bob")) as bob_on_2,
        client(three, token("cy")) as cy_on_3,
        client(two) as anonymous_on_2,
    ):
        everyone = (ada_on_1, ada_on_3, bob_on_1, bob_on_2, cy_on_3, anonymous_on_2)
        await welcome_all(*everyone)

        sent = await publish(two, {"event": "order.shipped", "data": {"id": 7}, "user": "ada"})
        for ws in (ada_on_1, ada_on_3):
            frame = await notification(ws)
            assert (frame["id"], frame["event"], frame["data"]) == (
                sent,
                "order.shipped",
                {"id": 7},
            )
        await sentinel(two, *everyone)  # nobody else received it, and ada no duplicate

        printed = await publish_from_python(deployment, "ada", "from.python")
        for ws in (ada_on_1, ada_on_3):
            frame = await notification(ws)
            assert (frame["id"], frame["data"]) == (printed, {"via": "python"})
        await sentinel(one, *everyone)


async def test_broadcast_reaches_every_connection_on_every_instance_exactly_once(
    deployment: Deployment,
) -> None:
    one, two, three = deployment.instances
    async with (
        client(one, token("dan")) as dan_on_1,
        client(one) as anonymous_on_1,
        client(two, token("dan")) as dan_on_2,
        client(two, token("eli")) as eli_on_2,
        client(three) as anonymous_on_3,
        client(three, token("fay")) as fay_on_3,
    ):
        everyone = (dan_on_1, anonymous_on_1, dan_on_2, eli_on_2, anonymous_on_3, fay_on_3)
        await welcome_all(*everyone)
        sent = [
            await publish(instance, {"event": "news", "broadcast": True})
            for instance in deployment.instances
        ]
        sent.append(await publish_from_python(deployment, "*", "news"))
        last = await publish(two, {"event": "sentinel", "broadcast": True})
        for ws in everyone:
            assert await ids_until(ws, last) == sent  # each once, in publish order


async def test_topic_subscribers_on_every_instance_receive_a_topic_notification(
    deployment: Deployment,
) -> None:
    one, two, three = deployment.instances
    member = token("gus", topics=["room:*"])
    async with (
        client(one, member) as on_1,
        client(two, token("hal", topics=["room:9"])) as on_2,
        client(three, token("ivy", topics=["*"])) as on_3,
        client(three, member) as not_subscribed_on_3,
    ):
        subscribers = (on_1, on_2, on_3)
        await welcome_all(*subscribers, not_subscribed_on_3)
        for ws in subscribers:
            await send(ws, {"type": "subscribe", "topic": "room:9"})
            assert await recv(ws) == {"type": "subscribed", "topic": "room:9"}

        sent = await publish(two, {"event": "chat", "data": "hi", "topic": "room:9"})
        for ws in subscribers:
            frame = await notification(ws)
            assert (frame["id"], frame["topic"], frame["data"]) == (sent, "room:9", "hi")
        await sentinel(one, *subscribers, not_subscribed_on_3)

        await send(on_3, {"type": "unsubscribe", "topic": "room:9"})
        assert (await recv(on_3))["type"] == "unsubscribed"
        sent = await publish(one, {"event": "chat", "topic": "room:9"})
        for ws in (on_1, on_2):
            assert (await notification(ws))["id"] == sent
        await sentinel(three, *subscribers, not_subscribed_on_3)


async def test_exclude_skips_one_connection_whichever_instance_publishes(
    deployment: Deployment,
) -> None:
    one, two, three = deployment.instances
    async with (
        client(one, token("lea")) as sender_on_1,
        client(three, token("lea")) as other_tab_on_3,
        client(two, token("max")) as max_on_2,
    ):
        sender_id, *_ = await welcome_all(sender_on_1, other_tab_on_3, max_on_2)
        sent = await publish(two, {"event": "edit", "user": "lea", "exclude": sender_id})
        assert (await notification(other_tab_on_3))["id"] == sent
        await sentinel(two, sender_on_1, other_tab_on_3, max_on_2)

        sent = await publish(three, {"event": "all", "broadcast": True, "exclude": sender_id})
        for ws in (other_tab_on_3, max_on_2):
            assert (await notification(ws))["id"] == sent
        await sentinel(one, sender_on_1, other_tab_on_3, max_on_2)


async def test_a_notification_for_one_user_reaches_only_the_instance_holding_that_user(
    deployment: Deployment,
) -> None:
    one, two, three = deployment.instances
    async with client(one, token("solo")) as solo_on_1, client(three, token("other")) as on_3:
        await welcome_all(solo_on_1, on_3)
        before = [
            (await metrics(s))["notifykit_propagator_received_total"] for s in (one, two, three)
        ]

        sent = await publish(two, {"event": "private", "user": "solo"})
        assert (await notification(solo_on_1))["id"] == sent
        await sentinel(two, solo_on_1, on_3)  # a broadcast: one message per instance with clients

        after = [
            (await metrics(s))["notifykit_propagator_received_total"] for s in (one, two, three)
        ]
        received = [a - b for a, b in zip(after, before, strict=True)]
        # Instance 1: the notification and the sentinel. Instance 3: the sentinel only — the
        # user's channel never reached it. Instance 2 holds no client: it received nothing.
        assert received == [2, 0, 1]


async def test_presence_on_any_instance_counts_the_connections_on_every_instance(
    deployment: Deployment,
) -> None:
    one, two, three = deployment.instances
    async with client(one, token("pia")) as pia_on_1, client(three, token("pia")) as pia_on_3:
        id_on_1, id_on_3 = await welcome_all(pia_on_1, pia_on_3)
        assert await presence(two, "pia") == {"user": "pia", "online": True, "connections": 2}
        assert deployment.presence_members("pia") == {
            f"{deployment.instance_id(0)}/{id_on_1}",  # --instance-id names the entries
            f"{deployment.instance_id(2)}/{id_on_3}",
        }
    body = await presence_until(two, "pia", lambda body: not body["online"])
    assert body == {"user": "pia", "online": False, "connections": 0}


async def test_an_instance_configured_only_by_environment_variables_joins_the_deployment(
    request: pytest.FixtureRequest, deployment: Deployment
) -> None:
    url_variable = (
        "NOTIFYKIT_REDIS_URL" if deployment.backend == "redis" else ("NOTIFYKIT_REDIS_CLUSTER_URL")
    )
    env = clean_env(
        NOTIFYKIT_JWT_SECRET=SECRET,
        NOTIFYKIT_API_KEY=API_KEY,
        NOTIFYKIT_REDIS_PREFIX=deployment.prefix,
        NOTIFYKIT_INSTANCE_ID=f"{deployment.prefix}-env",
        NOTIFYKIT_PRESENCE_TTL=PRESENCE_TTL,
        **{url_variable: deployment.url},
    )
    extra = start_serve(env=env)
    try:
        with log_on_failure(request, extra):
            async with client(extra, token("eva")) as on_extra:
                (connection_id,) = await welcome_all(on_extra)
                sent = await publish(deployment.instances[1], {"event": "hi", "user": "eva"})
                assert (await notification(on_extra))["id"] == sent
                assert deployment.presence_members("eva") == {
                    f"{deployment.prefix}-env/{connection_id}"
                }
    finally:
        extra.stop()


# --- Redis outages (a Redis of the test's own) ------------------------------------------------


@pytest.fixture
def own_deployment(redis_server: RedisServer) -> Iterator[Deployment]:
    """Three instances on a redis-server the test may kill."""
    deployed = Deployment("redis", redis_server.url, unique_prefix("own"), [redis_server], [])
    deployed.start()
    try:
        yield deployed
    finally:
        deployed.stop()


async def wait_all_healthy(servers: Sequence[Server], status: str) -> None:
    for server in servers:
        await wait_for_health(server, lambda h: h["status"] == status, within=RECOVERY_TIMEOUT)


async def test_a_redis_restart_drops_no_client_and_delivery_resumes_on_every_instance(
    request: pytest.FixtureRequest, own_deployment: Deployment, redis_server: RedisServer
) -> None:
    instances = own_deployment.instances
    one, two, three = instances
    with log_on_failure(request, *instances):
        async with client(one, token("rex")) as rex_on_1, client(three, token("rex")) as rex_on_3:
            await welcome_all(rex_on_1, rex_on_3)
            sent = await publish(two, {"event": "before", "user": "rex"})
            for ws in (rex_on_1, rex_on_3):
                assert (await notification(ws))["id"] == sent
            before = [
                (await metrics(s))["notifykit_propagator_reconnects_total"] for s in instances
            ]

            redis_server.kill()
            await wait_all_healthy(instances, "degraded")
            response = await post_publish(two, {"event": "lost", "user": "rex"})
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "unavailable"
            assert "could not propagate" in response.json()["message"]

            redis_server.start()  # same port, empty
            await wait_all_healthy(instances, "ok")
            assert [(await health(s))["connections"] for s in instances] == [1, 0, 1]
            sent = await publish(two, {"event": "after", "user": "rex"})
            for ws in (rex_on_1, rex_on_3):  # the same sockets: neither was dropped
                frame = await notification(ws)
                assert (frame["id"], frame["event"]) == (sent, "after")
                await send(ws, {"type": "ping"})
                assert await recv(ws) == {"type": "pong"}
            after = [(await metrics(s))["notifykit_propagator_reconnects_total"] for s in instances]
            assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)

            # Presence comes back too: the heartbeats re-register every connection.
            await presence_until(two, "rex", lambda body: body["connections"] == 2)


async def test_an_instance_started_while_redis_is_down_is_degraded_then_serves(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    redis = RedisServer(tmp_path / "redis")  # a free port, nothing listening yet
    deployed = Deployment("redis", redis.url, unique_prefix("late"), [redis], [])
    instance = start_serve(*deployed.flags("late-1"))
    try:
        with log_on_failure(request, instance):
            assert (await health(instance))["status"] == "degraded"
            assert await readyz(instance) == 503
            response = await post_publish(instance, {"event": "e", "user": "u"})
            assert response.status_code == 503, response.text
            assert "could not propagate" in response.json()["message"]

            redis.start()
            await wait_all_healthy([instance], "ok")
            assert await readyz(instance) == 200
            async with client(instance, token("sam")) as ws:
                await welcome(ws)
                sent = await publish(instance, {"event": "hello", "user": "sam"})
                assert (await notification(ws))["id"] == sent
    finally:
        instance.stop()
        redis.stop()
