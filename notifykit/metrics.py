"""What the hub and the gateway count, in forms cheap enough for the hot path.

The hub keeps plain counters in :attr:`Hub.metrics <notifykit.hub.Hub.metrics>` (a
``collections.Counter``) and the delivery latency in a :class:`LatencyHistogram`; nothing here
knows Prometheus. The web layer reads both at scrape time
(:mod:`notifykit.adapters.asgi.metrics`) and renders them. Until something reads them, counting
costs a dictionary increment per event; the latency, a decrement per notification received
(it is sampled under load) — never anything per connection.

Counters with a label are kept under ``"<name>:<label value>"`` keys of the same counter:
``connections_closed:4008`` (:func:`closed_key`) and ``notifications_dropped:slow_consumer``
(:func:`dropped_key`).
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from typing import TYPE_CHECKING

from .errors import ConfigurationError
from .wire import CloseCode

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Callable, Iterable

    from .connection import Connection

__all__ = [
    "CLIENT_CLOSED",
    "DROP_REASONS",
    "LATENCY_BUCKETS",
    "MAX_OBSERVATIONS",
    "MAX_STRIDE",
    "LatencyHistogram",
    "closed_key",
    "count_end",
    "created_ms",
    "dropped_key",
]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the delivery latency buckets: a notification's ``ts`` has
millisecond resolution, so nothing finer than 1 ms means anything."""

MAX_OBSERVATIONS = 1000
"""Delivery latency measurements per second, about, beyond which they are sampled."""
MAX_STRIDE = 1000
"""At most one notification in this many is measured, however fast they come."""

CLIENT_CLOSED = "client"
"""The ``code`` of a connection the server did not close: the client left (or vanished)."""

DROP_REASONS = ("malformed", "slow_consumer", "connection_ended")
"""Why notifications are dropped: a payload that could not be decoded (counted once per
payload, as ``malformed_payloads``); a slow consumer's queue, dropped with its 4008 close;
frames still queued when a connection ended otherwise (the client left, or did not take its
close frame in time)."""


def closed_key(code: int | None) -> str:
    """The counter key of connections closed with ``code`` (None: the client left)."""
    return f"connections_closed:{CLIENT_CLOSED if code is None else int(code)}"


def dropped_key(reason: str) -> str:
    """The counter key of notifications dropped for ``reason`` (one of :data:`DROP_REASONS`)."""
    return f"notifications_dropped:{reason}"


def count_end(metrics: Counter[str], connection: Connection) -> None:
    """Count a connection that ended: its close code, and the frames it never sent."""
    code = connection.close_code
    metrics[closed_key(code)] += 1
    if connection.dropped:
        reason = "slow_consumer" if code == CloseCode.SLOW_CONSUMER else "connection_ended"
        metrics[dropped_key(reason)] += connection.dropped


def created_ms(frame: str) -> int | None:
    """The ``ts`` (creation time, Unix ms) of a notification frame, without parsing its JSON;
    None if it has none.

    ``ts`` follows ``data`` in the frame, and only ``topic`` and the stream position — none of
    which can hold ``"ts":`` — follow it: the last ``"ts":`` is the frame's own.
    """
    at = frame.rfind('"ts":')
    if at < 0:
        return None
    start = at + 5
    end = frame.find(",", start)
    text = frame[start : end if end >= 0 else len(frame) - 1]
    return int(text) if text.isascii() and text.isdigit() else None


class LatencyHistogram:
    """Counts of observations (seconds) per bucket, and their sum: a Prometheus histogram's
    data, without Prometheus.

    ``bounds`` are the buckets' upper bounds, ascending (default :data:`LATENCY_BUCKETS`); an
    observation goes to the first bucket whose bound it does not exceed, or to the last
    (``+Inf``) one. ``clock`` is the wall clock notifications' ``ts`` are compared with (Unix
    seconds). Not thread-safe: the hub observes from its event loop only.

    The hub samples notifications: for each one it decrements :attr:`countdown`, and when that
    reaches 0 it calls :meth:`observe_frame`, which measures that notification with the weight
    of every one counted down since the last measurement, then sets the next countdown so that
    about :data:`MAX_OBSERVATIONS` are measured per second (every one, when they come slower).
    Counts and sum so estimate every notification's, quantiles are unchanged, and the cost
    stays flat under load: a decrement per notification.
    """

    __slots__ = ("_clock", "_every", "_last", "bounds", "countdown", "counts", "sum")

    def __init__(
        self, bounds: Iterable[float] = LATENCY_BUCKETS, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        if (
            not self.bounds
            or not all(math.isfinite(b) and b > 0 for b in self.bounds)
            or list(self.bounds) != sorted(set(self.bounds))
        ):
            raise ConfigurationError("histogram bounds must be positive, finite and ascending")
        self.counts = [0] * (len(self.bounds) + 1)
        """Observations per bucket (not cumulative); the last one is ``+Inf``."""
        self.sum = 0.0
        """The sum of every observation, in seconds."""
        self.countdown = 1
        """Notifications still to come before the next one is measured (see the class
        docstring); the hub decrements it inline, a method call per notification costing more
        than the whole sampled measurement."""
        self._every = 1  # the stride that set the countdown: the next measurement's weight
        self._last = -math.inf  # when the last measurement was made
        self._clock = clock

    def observe(self, seconds: float, weight: int = 1) -> None:
        """Count ``weight`` observations of ``seconds``; a negative one (clocks apart) counts
        as 0."""
        if seconds < 0:
            seconds = 0.0
        self.counts[bisect_left(self.bounds, seconds)] += weight
        self.sum += seconds * weight

    def observe_frame(self, frame: str) -> None:
        """Measure a notification frame: the time from its ``ts`` to now, weighted by the
        notifications counted down since the last measurement (nothing for a frame without
        ``ts``); then set the next :attr:`countdown`."""
        now = self._clock()
        weight = self._every
        # The next stride: the notifications expected in 1 / MAX_OBSERVATIONS s at the rate
        # seen since the last measurement.
        elapsed = now - self._last
        every = round(weight / (elapsed * MAX_OBSERVATIONS)) if elapsed > 0 else MAX_STRIDE
        self._every = self.countdown = max(1, min(every, MAX_STRIDE))
        self._last = now
        created = created_ms(frame)
        if created is not None:
            self.observe(now - created / 1000, weight)

    @property
    def count(self) -> int:
        """How many observations (weighted)."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations at or below it)`` per bucket, ``+Inf`` last — the
        form Prometheus exposes."""
        total = 0
        buckets = []
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            buckets.append((bound, total))
        return buckets
