"""Prometheus metrics of a hub, read at scrape time (needs ``pip install 'notifykit[metrics]'``).

::

    registry = metrics_registry(hub)           # one registry per app: no global state
    body, content_type = render(registry, request.headers.get("accept"))

:class:`HubCollector` is a ``prometheus_client`` custom collector: it holds no metric objects
and counts nothing itself; each scrape reads the hub's live state — its counters
(:attr:`Hub.metrics <notifykit.hub.Hub.metrics>`), its delivery latency histogram, its socket
state and the ``statistics()`` of its propagator and presence — and turns them into metric
families, each with its ``# HELP`` and ``# TYPE``. So the hot path never touches
``prometheus_client``, and nothing registers in its global default registry.
:class:`~notifykit.adapters.asgi.NotifyApp` serves it as ``GET /metrics``; other hosts (Django,
a ``websockets`` server) register a :class:`HubCollector` in a registry of their own.
Every metric is described in ``docs/metrics.md``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from ...metrics import CLIENT_CLOSED, DROP_REASONS, closed_key, dropped_key

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from ...hub import Hub

__all__ = ["PREFIX", "HubCollector", "metrics_registry", "render"]

PREFIX: Final = "notifykit_"

_COUNTER, _GAUGE = "counter", "gauge"

# The hub's own counters: key in Hub.metrics -> (metric name, help).
_CONNECTION_COUNTERS: Final = {
    "aborted_connections": (
        "connections_aborted",
        "Connections dropped without a close frame: the client did not take it in time.",
    ),
    "slow_consumer_closes": (
        "slow_consumer_closes",
        "Connections closed with 4008 because their outbound queue was full.",
    ),
    "auth_failures": ("auth_failures", "Handshakes refused with 4001: no or an invalid token."),
    "origin_refusals": ("origin_refusals", "Handshakes refused with 4003: Origin not allowed."),
    "bad_frames": ("bad_frames", "Invalid client frames (and invalid resume parameters)."),
    "connection_limit_refusals": (
        "connection_limit_refusals",
        "Handshakes refused with 1013: this instance served max_connections already.",
    ),
    "user_limit_refusals": (
        "user_limit_refusals",
        "Handshakes refused with 4409: the user had max_user_connections here already.",
    ),
    "rate_limited_frames": (
        "rate_limited_frames",
        "Client frames beyond max_frame_rate: not read, answered rate_limited.",
    ),
    "rate_limit_closes": (
        "rate_limit_closes",
        "Connections closed with 4429: they kept sending beyond max_frame_rate.",
    ),
}
_NOTIFICATION_COUNTERS: Final = {
    "notifications_published": (
        "notifications_published",
        "Notifications published through this instance.",
    ),
    "frames_delivered": (
        "notifications_delivered",
        "Notification frames handed to this instance's connections (one per connection).",
    ),
    "data_size_refusals": (
        "data_size_refusals",
        "Publishes refused because their data was over max_data_bytes.",
    ),
}

# Propagator statistics: name -> (metric name, type, help). Names it reports that are not
# listed are exposed as notifykit_propagator_<name>, untyped.
_PROPAGATOR: Final = {
    "published": (
        "propagator_published",
        _COUNTER,
        "Payloads the propagator sent (Redis: PUBLISH commands, one per routing key).",
    ),
    "received": ("propagator_received", _COUNTER, "Payloads the propagator received."),
    "subscriptions": (
        "propagator_subscriptions",
        _GAUGE,
        "Routing keys (Redis channels) subscribed now: those with a connection here.",
    ),
    "rejected_subscriptions": (
        "propagator_rejected_subscriptions",
        _COUNTER,
        "Subscriptions Redis refused.",
    ),
    "connected": ("propagator_connected", _GAUGE, "1 while connected to Redis, else 0."),
    "reconnects": (
        "propagator_reconnects",
        _COUNTER,
        "Reconnections of the subscriber connection to Redis.",
    ),
    "connect_failures": (
        "propagator_connect_failures",
        _COUNTER,
        "Failed attempts to connect the subscriber to Redis.",
    ),
    "publisher_connects": (
        "propagator_publisher_connects",
        _COUNTER,
        "Connections the publisher made to Redis.",
    ),
    "publish_errors": (
        "propagator_publish_errors",
        _COUNTER,
        "Publishes that failed (the publisher answered 503).",
    ),
    "publish_batches": (
        "propagator_publish_batches",
        _COUNTER,
        "Pipelines of PUBLISH commands sent to Redis.",
    ),
    "subscribe_batches": (
        "propagator_subscribe_batches",
        _COUNTER,
        "Writes of SUBSCRIBE/UNSUBSCRIBE commands to Redis.",
    ),
    "resubscribed_channels": (
        "propagator_resubscribed_channels",
        _COUNTER,
        "Channels subscribed again after a reconnection.",
    ),
    "lost_subscriptions": (
        "propagator_lost_subscriptions",
        _COUNTER,
        "Subscriptions found missing on Redis (and repaired).",
    ),
    "watchdog_repairs": (
        "propagator_watchdog_repairs",
        _COUNTER,
        "Repairs made by the subscription watchdog.",
    ),
    "malformed": (
        "propagator_malformed",
        _COUNTER,
        "Messages from Redis the propagator could not read.",
    ),
    "deliver_errors": (
        "propagator_deliver_errors",
        _COUNTER,
        "Payloads whose delivery to this instance's connections raised.",
    ),
    "dropped_unsubscribed": (
        "propagator_dropped_unsubscribed",
        _COUNTER,
        "Messages that arrived for channels just unsubscribed (dropped, harmless).",
    ),
    "topology_refreshes": (
        "propagator_topology_refreshes",
        _COUNTER,
        "Reads of the Redis Cluster's slot map.",
    ),
    "topology_refresh_failures": (
        "propagator_topology_refresh_failures",
        _COUNTER,
        "Failed reads of the Redis Cluster's slot map.",
    ),
    "moved_channels": (
        "propagator_moved_channels",
        _COUNTER,
        "Channels moved to another Redis Cluster master after a slot moved.",
    ),
    "masters": ("propagator_masters", _GAUGE, "Redis Cluster masters known."),
    "subscriber_connections": (
        "propagator_subscriber_connections",
        _GAUGE,
        "Subscriber connections open (one per Redis Cluster master).",
    ),
    "history_streams": ("history_streams", _GAUGE, "Streams held in history."),
    "history_entries": ("history_entries", _GAUGE, "Notifications held in history."),
    "history_bytes": ("history_bytes", _GAUGE, "Bytes of the notifications held in history."),
    "history_evicted": (
        "history_evicted_streams",
        _COUNTER,
        "Streams evicted from history (idle past the TTL, or beyond the limit).",
    ),
}

_PRESENCE: Final = {
    "local_users": (
        "presence_local_users",
        _GAUGE,
        "Users this instance has recorded in presence.",
    ),
    "local_connections": (
        "presence_local_connections",
        _GAUGE,
        "Connections this instance has recorded in presence.",
    ),
    "online_users": (
        "presence_online_users",
        _GAUGE,
        "Users online on any instance sharing this presence.",
    ),
    "heartbeats": (
        "presence_heartbeats",
        _COUNTER,
        "Presence heartbeats written to Redis.",
    ),
    "heartbeat_failures": (
        "presence_heartbeat_failures",
        _COUNTER,
        "Presence heartbeats that failed.",
    ),
    "writes": (
        "presence_writes",
        _COUNTER,
        "Round trips writing connects and disconnects to Redis.",
    ),
    "write_failures": (
        "presence_write_failures",
        _COUNTER,
        "Round trips writing connects and disconnects that failed.",
    ),
}


class HubCollector(Collector):
    """A ``prometheus_client`` collector reading ``hub``'s live state at each scrape."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        """Every metric family, from the hub's state now."""
        hub = self.hub
        state = hub.state
        yield GaugeMetricFamily(
            PREFIX + "connections",
            "Websocket connections open on this instance.",
            value=state.connection_count,
        )
        yield GaugeMetricFamily(
            PREFIX + "users_online",
            "Distinct users with a connection on this instance.",
            value=state.user_count,
        )
        yield GaugeMetricFamily(
            PREFIX + "healthy",
            "1 while the propagator and presence reach their backends (/readyz answers 200).",
            value=1 if hub.healthy else 0,
        )
        counters = dict(hub.metrics)  # one consistent copy for the whole scrape
        yield CounterMetricFamily(
            PREFIX + "connections_opened",
            "Websocket connections accepted.",
            value=counters.get("connections_opened", 0),
        )
        yield _closed(counters)
        for key, (name, help) in (_CONNECTION_COUNTERS | _NOTIFICATION_COUNTERS).items():
            yield CounterMetricFamily(PREFIX + name, help, value=counters.get(key, 0))
        dropped = CounterMetricFamily(
            PREFIX + "notifications_dropped",
            "Notifications not delivered: reason malformed (payloads that could not be "
            "decoded), slow_consumer (frames dropped with a 4008 queue), connection_ended "
            "(frames still queued when a connection ended).",
            labels=["reason"],
        )
        for reason in DROP_REASONS:
            key = "malformed_payloads" if reason == "malformed" else dropped_key(reason)
            dropped.add_metric([reason], counters.get(key, 0))
        yield dropped
        yield _latency(hub)
        yield from _families("propagator_", hub.propagator.statistics(), _PROPAGATOR)
        yield from _families("presence_", hub.presence.statistics(), _PRESENCE)


def _closed(counters: Mapping[str, float]) -> Metric:
    closed = CounterMetricFamily(
        PREFIX + "connections_closed",
        f'Connections ended, by the close code the server sent ("{CLIENT_CLOSED}": the '
        "client closed or vanished).",
        labels=["code"],
    )
    prefix = closed_key(None).rpartition(":")[0] + ":"
    codes = sorted(key[len(prefix) :] for key in counters if key.startswith(prefix))
    for code in codes:
        closed.add_metric([code], counters[prefix + code])
    return closed


def _latency(hub: Hub) -> Metric:
    latency = hub.latency
    return HistogramMetricFamily(
        PREFIX + "delivery_latency_seconds",
        "Seconds from a notification's creation (its ts) to its frame being handed to this "
        "instance's connections; observed once per notification and routing key received here, "
        "not per connection.",
        buckets=[
            ("+Inf" if math.isinf(bound) else repr(bound), count)
            for bound, count in latency.cumulative()
        ],
        sum_value=latency.sum,
    )


def _families(
    source: str,
    stats: Mapping[str, float],
    known: Mapping[str, tuple[str, str, str]],
) -> Iterator[Metric]:
    for key, value in stats.items():
        entry = known.get(key)
        if entry is None:
            name = PREFIX + source + "".join(c if c.isalnum() else "_" for c in key)
            help = f"The {source[:-1]}'s statistic {key!r} (see its statistics())."
            yield UnknownMetricFamily(name, help, value=value)
            continue
        name, kind, help = entry
        family = CounterMetricFamily if kind == _COUNTER else GaugeMetricFamily
        yield family(PREFIX + name, help, value=value)


def metrics_registry(hub: Hub) -> CollectorRegistry:
    """A registry of its own holding one :class:`HubCollector` for ``hub``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(hub))
    return registry


def render(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """``(body, content type)`` of a scrape: the Prometheus text format (0.0.4), or what the
    ``Accept`` header asks for among those ``prometheus_client`` writes (OpenMetrics)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
