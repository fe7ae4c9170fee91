"""``GET /metrics``: the hub's live state, in the Prometheus text format, read back with
prometheus_client's own parser.

Connections are served by the app's own gateway over in-memory websockets
(tests/memory_transport.py); the figures are scraped through the real route.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import prometheus_client
import pytest
from memory_transport import MemoryClient
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from servers import RedisClusterServers, RedisServer
from test_gateway import connect, handshake, read_until_closed, token, welcome

from notifykit import CloseCode, ConfigurationError, Hub, JWTAuthenticator
from notifykit.adapters.asgi import NotifyApp
from notifykit.adapters.asgi.app import METRICS_MISSING
from notifykit.adapters.asgi.metrics import metrics_registry
from notifykit.envelope import Envelope, IdGenerator, pack
from notifykit.memory import MemoryPropagator
from notifykit.metrics import MAX_OBSERVATIONS, LatencyHistogram, created_ms
from notifykit.model import ToTopic, ToUsers
from notifykit.redis import RedisClusterPropagator, RedisPresence, RedisPropagator
from notifykit.testing import inbox
from notifykit.wire import Error, Notification, Position, with_position

pytestmark = pytest.mark.anyio

HTTP_API_PAGE = Path(__file__).resolve().parent.parent / "docs" / "http-api.md"
SECRET = "gateway-tests-secret-0123456789abcdef"  # test_gateway's tokens are signed with it


def app_for(hub: Hub, **options: Any) -> NotifyApp:
    return NotifyApp(hub, JWTAuthenticator(secret=SECRET), api_key="key", **options)


async def scrape(app: NotifyApp, accept: str | None = None) -> httpx.Response:
    headers = {"accept": accept} if accept else {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://nk") as http:
        return await http.get("/metrics", headers=headers)


async def families(app: NotifyApp) -> dict[str, Metric]:
    """The scrape, checked for form (see :func:`check_exposition`), by family name."""
    response = await scrape(app)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    check_exposition(response.text)
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def check_exposition(text: str) -> None:
    """Every sample belongs to a family announced with ``# HELP`` and ``# TYPE``; names carry
    the ``notifykit_`` prefix, counters end in ``_total``, units are base units."""
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help = line[7:].partition(" ")
            assert help.strip(), f"{name} has an empty HELP"
            helps[name] = help
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name in helps, f"TYPE before HELP for {name}"
            types[name] = kind
        elif line:
            sample = line.partition("{")[0].partition(" ")[0]
            family = next(
                (
                    name
                    for name in (sample.removesuffix(s) for s in ("_bucket", "_count", "_sum", ""))
                    if name in types
                ),
                None,
            )
            assert family is not None, f"sample {sample} has no # TYPE line before it"
    assert helps.keys() == types.keys()
    for name, kind in types.items():
        assert name.startswith("notifykit_"), name
        assert (kind == "counter") == name.endswith("_total"), f"{name} is a {kind}"
        assert not name.endswith(("_milliseconds", "_ms", "_kilobytes", "_megabytes")), name


def sample(found: Mapping[str, Metric], family: str, **labels: str) -> float:
    """The value of ``family``'s sample with ``labels`` (a counter's ``_total`` sample)."""
    metric = found[family]
    name = family + "_total" if metric.type == "counter" else family
    values = [s.value for s in metric.samples if s.name == name and s.labels == labels]
    assert len(values) == 1, (family, labels, metric.samples)
    return values[0]


def histogram(found: Mapping[str, Metric], family: str) -> tuple[dict[str, float], float, float]:
    """A histogram's cumulative buckets (by ``le``), count and sum."""
    samples = found[family].samples
    buckets = {s.labels["le"]: s.value for s in samples if s.name == family + "_bucket"}
    (count,) = [s.value for s in samples if s.name == family + "_count"]
    (total,) = [s.value for s in samples if s.name == family + "_sum"]
    return buckets, count, total


def closed_codes(found: Mapping[str, Metric]) -> dict[str, float]:
    return {s.labels["code"]: s.value for s in found["notifykit_connections_closed"].samples}


@asynccontextmanager
async def served(app: NotifyApp, hs: Any, read_buffer: int = 10_000) -> AsyncIterator[MemoryClient]:
    async with connect(app.gateway, hs, read_buffer=read_buffer) as client:
        yield client


# --- the figures after a known sequence of events ---------------------------------------------


async def test_the_figures_are_the_hub_s_after_a_known_sequence_of_events() -> None:
    async with Hub() as hub:
        app = app_for(hub, allowed_origins=["https://app.example"])
        # Two handshakes refused: a foreign origin, a bad token.
        async with served(app, handshake(token("42"), origin="https://evil.example")) as refused:
            assert (await refused.closed())[0] == CloseCode.FORBIDDEN
        async with served(app, handshake("not-a-jwt")) as refused:
            assert (await refused.closed())[0] == CloseCode.UNAUTHORIZED
        async with (
            served(app, handshake(token("42"))) as a,
            served(app, handshake(token("42"))) as b,
            served(app, handshake(token("7"))) as c,
        ):
            await welcome(a)
            of_b = (await welcome(b)).connection_id
            await welcome(c)
            await a.send_text("not json")  # one bad frame: an error frame, the connection stays
            assert isinstance(await a.recv(), Error)
            await hub.notify_user("42", "to-42")  # 2 deliveries
            await hub.notify_user("7", "to-7")  # 1 delivery
            await hub.notify_user("nobody", "to-nobody")  # none: nobody is connected here
            for client in (a, b, c):
                assert isinstance(await client.recv(), Notification)

            found = await families(app)
            assert sample(found, "notifykit_connections") == hub.state.connection_count == 3
            assert sample(found, "notifykit_users_online") == hub.state.user_count == 2
            assert sample(found, "notifykit_healthy") == 1
            assert sample(found, "notifykit_connections_opened") == 3
            assert closed_codes(found) == {}
            assert sample(found, "notifykit_origin_refusals") == 1
            assert sample(found, "notifykit_auth_failures") == 1
            assert sample(found, "notifykit_bad_frames") == 1
            assert sample(found, "notifykit_notifications_published") == 3
            assert sample(found, "notifykit_notifications_delivered") == 3
            # One latency observation per payload received with a connection for it: u:42, u:7.
            assert histogram(found, "notifykit_delivery_latency_seconds")[1] == 2
            # Routing keys with a connection here: u:42, u:7, "auth" and "all".
            assert sample(found, "notifykit_propagator_subscriptions") == 4

            # The server closes b with 1000; c leaves by itself, then a (when the block ends).
            (connection,) = [x for x in hub.local_connections("42") if x.id == of_b]
            connection.close(CloseCode.NORMAL, "bye")  # type: ignore[attr-defined]
            assert await b.closed() == (CloseCode.NORMAL, "bye")
            c.disconnect()

        await wait_for(lambda: hub.state.connection_count == 0)
        found = await families(app)
        assert sample(found, "notifykit_connections") == 0
        assert sample(found, "notifykit_users_online") == 0
        assert sample(found, "notifykit_connections_opened") == 3
        assert closed_codes(found) == {"1000": 1, "client": 2}
        assert sample(found, "notifykit_connections_aborted") == 0
        assert sample(found, "notifykit_slow_consumer_closes") == 0
        assert sample(found, "notifykit_propagator_subscriptions") == 0
        for reason in ("malformed", "slow_consumer", "connection_ended"):
            assert sample(found, "notifykit_notifications_dropped", reason=reason) == 0


async def wait_for(condition: Any, within: float = 5.0) -> None:
    """Poll ``condition()`` (hub state signals nothing) until it holds."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.005)


async def test_a_slow_consumer_s_dropped_frames_and_what_it_received_add_up_to_its_deliveries() -> (
    None
):
    async with Hub() as hub:
        app = app_for(hub, queue_size=4)
        async with served(app, handshake(token("42")), read_buffer=3) as slow:
            await welcome(slow)
            for n in range(20):
                await hub.notify_user("42", "tick", n)
            received = await read_until_closed(slow, Notification)
            assert (await slow.closed())[0] == CloseCode.SLOW_CONSUMER
        found = await families(app)
    dropped = sample(found, "notifykit_notifications_dropped", reason="slow_consumer")
    assert dropped > 0
    assert len(received) + dropped == sample(found, "notifykit_notifications_delivered")
    assert sample(found, "notifykit_slow_consumer_closes") == 1
    assert closed_codes(found) == {"4008": 1}


async def test_a_malformed_payload_is_counted_as_dropped() -> None:
    async with Hub() as hub, inbox(hub, "42"):
        app = app_for(hub)
        await hub.propagator.publish(["u:42"], b"not a notifykit payload")
        found = await families(app)
    assert sample(found, "notifykit_notifications_dropped", reason="malformed") == 1
    assert sample(found, "notifykit_notifications_delivered") == 0


# --- delivery latency -----------------------------------------------------------------------


async def test_latency_is_observed_once_per_payload_however_many_connections_get_it() -> None:
    async with Hub() as hub, inbox(hub, "42"), inbox(hub, "42"), inbox(hub, "42"):
        await hub.notify_user("42", "to-three-connections")
        assert hub.latency.count == 1
        await hub.notify_user("nobody", "to-no-connection-here")
        assert hub.latency.count == 1
        found = await families(app_for(hub))
    buckets, count, total = histogram(found, "notifykit_delivery_latency_seconds")
    assert count == 1 == buckets["+Inf"]
    assert total >= 0
    assert list(buckets.values()) == sorted(buckets.values())  # cumulative


async def test_latency_runs_from_the_notification_s_ts_and_clamps_clocks_that_disagree() -> None:
    def created(offset_ms: int) -> bytes:
        """A payload for user 42 created ``offset_ms`` from now (as another instance would
        publish it, its clock being what it is)."""
        now_ms = time.time_ns() // 1_000_000
        envelope = Envelope(
            IdGenerator()(), "e", None, ToUsers(("42",)), created_at=now_ms + offset_ms
        )
        return pack(envelope)

    async with Hub() as hub, inbox(hub, "42"):
        await hub.propagator.publish(["u:42"], created(-3_600_000))  # an hour ago
        await hub.propagator.publish(["u:42"], created(60_000))  # a clock a minute ahead
        found = await families(app_for(hub))
    buckets, count, total = histogram(found, "notifykit_delivery_latency_seconds")
    assert count == 2
    assert buckets["0.001"] == 1  # the future one counts as 0 s
    assert buckets["10.0"] == 1  # the old one is beyond every finite bucket
    assert total >= 3600


class Clock:
    """A wall clock the test moves; counts how often it is read (once per measurement)."""

    def __init__(self) -> None:
        self.now = time.time()
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


@pytest.mark.parametrize(
    ("per_second", "measured"),
    [
        pytest.param(100, range(100, 101), id="slower-every-one"),
        pytest.param(10_000, range(MAX_OBSERVATIONS - 10, MAX_OBSERVATIONS + 10), id="faster"),
    ],
)
async def test_under_load_latency_is_sampled_about_max_observations_per_second_with_weights(
    per_second: int, measured: range
) -> None:
    """1 s of notifications at ``per_second``: every one is measured while they come slower
    than MAX_OBSERVATIONS per second, else about that many per second, each weighted by the
    notifications it stands for — so the count still estimates them all."""
    clock = Clock()
    async with Hub() as hub, inbox(hub, "42", queue_size=per_second) as box:
        hub.latency = LatencyHistogram(clock=clock)
        for _ in range(per_second):
            clock.now += 1 / per_second
            await hub.notify_user("42", "tick")
        assert len(box.notifications) == per_second
        assert clock.reads in measured
        # Only the notifications since the last measurement are not counted yet.
        assert 0 <= per_second - hub.latency.count <= per_second // MAX_OBSERVATIONS


def test_the_histogram_counts_a_value_on_a_bound_in_that_bound_s_bucket() -> None:
    histogram = LatencyHistogram((0.5, 1.0))
    for seconds in (0.5, 0.75, 1.0, 7.0, -1.0):
        histogram.observe(seconds)
    assert histogram.counts == [2, 2, 1]
    assert histogram.cumulative() == [(0.5, 2), (1.0, 4), (float("inf"), 5)]
    assert histogram.count == 5
    assert histogram.sum == 9.25


@pytest.mark.parametrize("bounds", [(), (1.0, 0.5), (0.5, 0.5), (0.0, 1.0), (1.0, float("inf"))])
def test_histogram_bounds_must_be_positive_finite_and_ascending(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ConfigurationError):
        LatencyHistogram(bounds)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(Envelope("01", "e", {"ts": 5}, ToUsers(("1",))).frame(), id="ts-in-data"),
        pytest.param(
            Envelope("01", "e", {'"ts":': '"ts":9,'}, ToTopic("t")).frame(), id="ts-in-strings"
        ),
        pytest.param(
            with_position(
                Envelope("01", "e", [1], ToTopic("room")).frame(), "t:room", Position("ep", 3)
            ),
            id="with-position",
        ),
    ],
)
def test_the_creation_time_is_read_from_the_frame_s_own_ts(frame: str) -> None:
    assert created_ms(frame) == json.loads(frame)["ts"]


def test_a_frame_without_ts_has_no_creation_time() -> None:
    assert created_ms('{"type":"pong"}') is None
    assert created_ms('{"type":"notification","ts":"soon"}') is None


# --- one registry per app; the formats; without prometheus_client ------------------------------


async def test_each_app_has_its_own_registry_and_the_global_one_is_untouched() -> None:
    async with Hub() as one, Hub() as two, inbox(one, "42"):
        await one.notify_user("42", "only-on-one")
        first, second = await families(app_for(one)), await families(app_for(two))
    assert sample(first, "notifykit_notifications_published") == 1
    assert sample(second, "notifykit_notifications_published") == 0
    assert sample(first, "notifykit_connections") == 1
    assert sample(second, "notifykit_connections") == 0
    default = {family.name for family in prometheus_client.REGISTRY.collect()}
    assert not any(name.startswith("notifykit") for name in default)


async def test_openmetrics_is_served_when_the_scraper_asks_for_it() -> None:
    async with Hub() as hub, inbox(hub, "42"):
        await hub.notify_user("42", "e")
        response = await scrape(app_for(hub), "application/openmetrics-text; version=1.0.0")
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    found = {family.name: family for family in openmetrics_families(response.text)}
    assert found["notifykit_notifications_published"].type == "counter"
    assert sample(found, "notifykit_notifications_published") == 1


async def test_without_prometheus_client_the_route_answers_501_saying_how_to_enable_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails, as if absent
    async with Hub() as hub:
        app = app_for(hub)
        response = await scrape(app)
    assert app.metrics_registry is None
    assert response.status_code == 501
    assert response.json() == {"error": "metrics_unavailable", "message": METRICS_MISSING}
    assert "pip install 'notifykit[metrics]'" in METRICS_MISSING
    assert json.dumps(response.json()) in HTTP_API_PAGE.read_text()  # documented as served


async def test_a_propagator_s_unknown_statistics_are_served_untyped_with_help() -> None:
    class Custom(MemoryPropagator):
        def statistics(self) -> Mapping[str, int]:
            return {**super().statistics(), "queue.depth": 7}

    async with Hub(Custom()) as hub:
        found = await families(app_for(hub))
    family = found["notifykit_propagator_queue_depth"]
    assert family.type == "unknown"
    assert "queue.depth" in family.documentation
    assert sample(found, "notifykit_propagator_queue_depth") == 7


def untyped(found: Mapping[str, Metric]) -> list[str]:
    return [name for name, family in found.items() if family.type == "unknown"]


@pytest.mark.redis
async def test_a_redis_propagator_s_figures_are_served(redis_server: RedisServer) -> None:
    def hub() -> Hub:
        return Hub(
            RedisPropagator(redis_server.url, prefix="nk-metrics"),
            presence=RedisPresence(redis_server.url, prefix="nk-metrics"),
        )

    async with hub() as publisher, hub() as receiver, inbox(receiver, "42") as box:
        await publisher.notify_user("42", "across-redis")
        assert (await box.next()).event == "across-redis"
        found = await families(app_for(receiver))
    assert sample(found, "notifykit_propagator_connected") == 1
    assert sample(found, "notifykit_propagator_received") == 1
    assert sample(found, "notifykit_propagator_reconnects") == 0
    assert sample(found, "notifykit_propagator_subscriptions") == 3  # u:42, auth, all
    assert sample(found, "notifykit_notifications_published") == 0  # published by the other
    assert sample(found, "notifykit_notifications_delivered") == 1
    assert histogram(found, "notifykit_delivery_latency_seconds")[1] == 1
    assert sample(found, "notifykit_presence_local_users") == 1
    assert sample(found, "notifykit_presence_heartbeat_failures") == 0
    assert untyped(found) == []  # every statistic of Redis propagator and presence is known


@pytest.mark.redis
async def test_a_redis_cluster_propagator_s_figures_are_all_typed(
    redis_cluster: RedisClusterServers,
) -> None:
    async with Hub(RedisClusterPropagator(redis_cluster.url, prefix="nk-metrics")) as hub:
        found = await families(app_for(hub))
    assert sample(found, "notifykit_propagator_masters") == 3
    assert sample(found, "notifykit_propagator_topology_refreshes") >= 1
    assert untyped(found) == []


# httpx's ASGITransport leaves prometheus_client's app an unfinished request body on trio.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_registry_serves_the_same_metrics_through_prometheus_client_s_own_app() -> None:
    """docs/metrics.md: a host without NotifyApp mounts make_asgi_app(metrics_registry(hub))."""
    async with Hub() as hub, inbox(hub, "42"):
        await hub.notify_user("42", "e")
        app = prometheus_client.make_asgi_app(metrics_registry(hub))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://nk"
        ) as http:
            response = await http.get("/")
    check_exposition(response.text)
    found = {family.name: family for family in text_string_to_metric_families(response.text)}
    assert sample(found, "notifykit_notifications_delivered") == 1
    assert sample(found, "notifykit_connections") == 1
