"""The hub: what an application holds to send notifications, and what routes them to connections.

::

    async with Hub() as hub:                       # in-memory propagation
        await hub.notify_user("42", "order.shipped", {"order": 7})

The hub owns the :class:`~notifykit.protocols.SocketState`, the
:class:`~notifykit.protocols.Propagator` and the :class:`~notifykit.protocols.Presence`. It
keeps the propagator subscribed to exactly the routing keys that have a connection here, and
hands every payload it receives to those connections — the same frame text to each, encoded
once by the publisher.

A connection's life in the hub: :meth:`Hub.attach` registers it (and returns once a
notification published afterwards is sure to reach it); :meth:`Hub.unregister` takes it out of
routing at once, without any I/O, so its socket can be closed right away; :meth:`Hub.detach`
then does the network bookkeeping (unsubscribing keys nobody here needs any more, presence),
bounded in time, and never raises.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import anyio

from .connlog import log_fields
from .envelope import Envelope, IdGenerator, pack
from .errors import (
    ConfigurationError,
    HistoryOff,
    InvalidNotification,
    NotRunning,
    PropagationError,
)
from .limits import DEFAULT_MAX_DATA_BYTES, ThrottledLog, at_least
from .memory import MemoryPresence, MemoryPropagator, MemorySocketState
from .metrics import LatencyHistogram
from .model import (
    Target,
    ToAuthenticated,
    ToEveryone,
    ToTopic,
    ToUsers,
    topic_key,
    user_key,
    users,
    validate_topic,
)
from .recovery import Registration
from .router import Router
from .wire import CloseCode

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Mapping
    from types import TracebackType

    from .connection import Connection
    from .protocols import Presence, Propagator, Receiver, SocketState
    from .wire import Position

__all__ = ["HistoryPage", "Hub"]

logger = logging.getLogger("notifykit.hub")


def _check_timeout(name: str, value: float, *, zero: bool = False) -> float:
    if (
        not isinstance(value, int | float)
        or math.isnan(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        bound = "0 or more" if zero else "above 0"
        raise ConfigurationError(f"{name} must be a number of seconds {bound}, not {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Part of one stream's history: its ``stream`` name, ``epoch`` and ``last`` offset, the
    first offset still retained (``first``), and ``notifications`` — frames (JSON text), in
    offset order."""

    stream: str
    epoch: str
    last: int
    first: int
    notifications: list[str]


class Hub:
    """Sends notifications and routes them to the connections this instance holds.

    ``propagator`` defaults to a :class:`~notifykit.memory.MemoryPropagator` (one process);
    pass a Redis propagator to scale out. ``presence`` defaults to a
    :class:`~notifykit.memory.MemoryPresence`; pass a ``RedisPresence`` for cluster-wide
    presence. ``subscribe_timeout`` bounds how long registering a connection may wait for the
    propagator to confirm a subscription (and to read history); ``cleanup_timeout`` bounds the
    bookkeeping after a connection ends (unsubscribing, presence); ``replay_limit`` is the most
    notifications replayed per stream to a resuming client (beyond, it is told
    ``recovered: false`` and refetches); ``max_data_bytes`` is the largest ``data`` a
    notification may carry, in bytes of its JSON encoding (UTF-8). Use it as an async context
    manager: entering
    starts the propagator, leaving closes every connection with ``1001 going away`` (waiting up
    to ``shutdown_timeout`` seconds for them to go) and stops it.
    """

    def __init__(
        self,
        propagator: Propagator | None = None,
        *,
        presence: Presence | None = None,
        socket_state: SocketState | None = None,
        subscribe_timeout: float = 10.0,
        cleanup_timeout: float = 5.0,
        shutdown_timeout: float = 5.0,
        replay_limit: int = 1000,
        max_data_bytes: int = DEFAULT_MAX_DATA_BYTES,
    ) -> None:
        self.propagator: Propagator = propagator if propagator is not None else MemoryPropagator()
        self.state: SocketState = socket_state if socket_state is not None else MemorySocketState()
        self.presence: Presence = presence if presence is not None else MemoryPresence()
        self.metrics: Counter[str] = Counter()
        """Monotonic counters (``notifications_published``, ``frames_delivered``...); see
        :mod:`notifykit.metrics`."""
        self._subscribe_timeout = _check_timeout("subscribe_timeout", subscribe_timeout)
        self._cleanup_timeout = _check_timeout("cleanup_timeout", cleanup_timeout)
        self._shutdown_timeout = _check_timeout("shutdown_timeout", shutdown_timeout, zero=True)
        if not isinstance(replay_limit, int) or replay_limit < 1:
            raise ConfigurationError(f"replay_limit must be at least 1, not {replay_limit!r}")
        self.router = Router(
            self.propagator,
            self.state,
            metrics=self.metrics,
            latency=LatencyHistogram(),
            subscribe_timeout=self._subscribe_timeout,
            cleanup_timeout=self._cleanup_timeout,
            replay_limit=replay_limit,
        )
        """Routes what the propagator delivers to this instance's connections
        (:class:`~notifykit.router.Router`)."""
        self.max_data_bytes = at_least("max_data_bytes", max_data_bytes, 1)
        """The largest ``data`` :meth:`publish` sends, in bytes of encoded JSON."""
        self._log = ThrottledLog(logger)
        self._ids = IdGenerator()
        self._running = False
        self._closing = False
        # Every connection between attach() and the end of its detach(): shutdown waits for
        # them, so each has sent its close frame before the propagator stops.
        self._live: set[Connection] = set()
        self._drained: anyio.Event | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._running or self._closing:
            raise RuntimeError("a hub runs once: this one is already running or was closed")
        await self.propagator.start(self.router.deliver)
        try:
            await self.presence.start()
        except BaseException:
            await self.propagator.aclose()
            raise
        self._running = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection with 1001, wait (up to ``shutdown_timeout``) for them to
        go, then stop presence and the propagator. Idempotent."""
        if not self._running:
            return
        self._running = False
        self._closing = True
        with anyio.CancelScope(shield=True):
            if self._live:
                self._drained = anyio.Event()
                for connection in list(self._live):
                    connection.close(CloseCode.GOING_AWAY, "server shutting down")
                with anyio.move_on_after(self._shutdown_timeout):
                    await self._drained.wait()
            try:
                await self.presence.aclose()
            finally:
                await self.propagator.aclose()

    @property
    def latency(self) -> LatencyHistogram:
        """Seconds from a notification's creation (its ``ts``) to its frame being handed to
        this instance's connections: per payload received (sampled under load), never per
        connection."""
        return self.router.latency

    @latency.setter
    def latency(self, histogram: LatencyHistogram) -> None:
        self.router.latency = histogram

    @property
    def running(self) -> bool:
        """True between entering and leaving the hub's context."""
        return self._running

    @property
    def healthy(self) -> bool:
        """False while the propagator or presence cannot reach its backend."""
        return self._running and self.propagator.healthy and self.presence.healthy

    def _check_running(self) -> None:
        if not self._running:
            raise NotRunning("the hub is not running: use `async with hub:`")

    # --- sending --------------------------------------------------------------------------

    async def publish(
        self, target: Target, event: str, data: Any = None, *, exclude: str | None = None
    ) -> str:
        """Send one notification to ``target`` and return its id.

        ``exclude`` is a connection id (from the ``welcome`` frame) that will not receive it.
        Raises :class:`~notifykit.errors.InvalidNotification` for a bad event, bad data (not
        JSON, nested deeper than :data:`~notifykit.wire.MAX_DATA_DEPTH`, or larger than
        ``max_data_bytes`` encoded), :class:`~notifykit.errors.PropagationError` if it could
        not be sent, and :class:`~notifykit.errors.NotRunning` outside ``async with hub``.
        """
        self._check_running()
        envelope = Envelope(self._ids(), event, data, target, exclude)
        payload = pack(envelope)
        # The payload holds data and a few hundred bytes more: only a payload over the limit
        # needs its data measured.
        if len(payload) > self.max_data_bytes:
            self._check_data_size(envelope, payload)
        await self.propagator.publish(envelope.keys(), payload)
        self.metrics["notifications_published"] += 1
        return envelope.id

    def _check_data_size(self, envelope: Envelope, payload: bytes) -> None:
        """Raise InvalidNotification if the data in ``payload`` is over ``max_data_bytes``:
        its size is the payload's less that of the same envelope with ``null`` as data."""
        rest = len(pack(dataclasses.replace(envelope, data=None))) - len(b"null")
        size = len(payload) - rest
        if size <= self.max_data_bytes:
            return
        self.metrics["data_size_refusals"] += 1
        self._log.warning(
            "max_data_bytes",
            "refused to publish %r: data of %d bytes encoded, over max_data_bytes (%d)",
            envelope.event[:64],
            size,
            self.max_data_bytes,
        )
        raise InvalidNotification(
            f"data too large: {size} bytes encoded as JSON, at most {self.max_data_bytes}"
        )

    async def notify_user(
        self, user_id: str, event: str, data: Any = None, *, exclude: str | None = None
    ) -> str:
        """Send to every connection of one user, on every instance."""
        return await self.publish(ToUsers((user_id,)), event, data, exclude=exclude)

    async def notify_users(
        self, user_ids: Iterable[str], event: str, data: Any = None, *, exclude: str | None = None
    ) -> str:
        """Send to every connection of each user (one notification id for all of them)."""
        return await self.publish(users(user_ids), event, data, exclude=exclude)

    async def notify_topic(
        self, topic: str, event: str, data: Any = None, *, exclude: str | None = None
    ) -> str:
        """Send to every connection subscribed to ``topic``."""
        return await self.publish(ToTopic(topic), event, data, exclude=exclude)

    async def notify_authenticated(
        self, event: str, data: Any = None, *, exclude: str | None = None
    ) -> str:
        """Send to every authenticated connection."""
        return await self.publish(ToAuthenticated(), event, data, exclude=exclude)

    async def broadcast(self, event: str, data: Any = None, *, exclude: str | None = None) -> str:
        """Send to every connection, anonymous ones included."""
        return await self.publish(ToEveryone(), event, data, exclude=exclude)

    # --- receiving ------------------------------------------------------------------------

    # --- registration ---------------------------------------------------------------------

    async def attach(
        self,
        connection: Connection,
        *,
        resume: Mapping[str, Position] | None = None,
        greeting: Callable[[Registration], str] | None = None,
    ) -> Registration:
        """Register a connection under its principal's keys, and catch it up.

        Returns once the propagator confirmed every subscription the connection needs, so a
        notification published after this returns reaches it. ``resume`` maps streams to the
        client's positions: what it missed there is replayed (streams that are not its own are
        ignored). Before any notification, the connection is offered ``greeting(...)`` (the
        gateway's ``welcome``) with the positions and ``recovered`` found — see
        :mod:`notifykit.recovery`. Raises :class:`~notifykit.errors.PropagationError` if
        that could not be done (the connection is then unregistered again) and
        :class:`~notifykit.errors.NotRunning` if the hub is not running. Either way, call
        :meth:`detach` when the connection ends.
        """
        self._check_running()
        self._live.add(connection)
        keys = connection.principal.routing_keys()
        registration = await self.router.catch_up(connection, keys, resume, greeting)
        user_id = connection.principal.user_id
        if user_id is not None:
            try:
                await self.presence.connected(user_id, connection.id)
            except PropagationError as exc:
                # Not fatal: delivery works, and the presence heartbeat registers it later.
                logger.warning(
                    "presence could not record %s of user %r: %s",
                    connection.id,
                    user_id,
                    exc,
                    extra=log_fields(connection),
                )
        return registration

    def unregister(self, connection: Connection) -> None:
        """Take a connection out of routing at once (no I/O): nothing reaches it any more.

        Keys it leaves empty stay in ``connection.keys`` for :meth:`detach` to unsubscribe.
        Idempotent.
        """
        self.router.leave(connection, list(connection.keys))
        connection.topics.clear()

    async def detach(self, connection: Connection) -> None:
        """Unregister a connection (if :meth:`unregister` was not called yet), then unsubscribe
        the keys nobody here needs any more and forget it in presence — bounded by
        ``cleanup_timeout`` and skipped while the hub shuts down (stopping the propagator and
        presence does it for every connection at once). Idempotent; never raises for the
        propagator or presence."""
        if connection not in self._live:
            return
        self.unregister(connection)
        try:
            if self._running:
                with anyio.CancelScope(shield=True), anyio.move_on_after(self._cleanup_timeout):
                    await self._forget(connection)
        finally:
            connection.keys.clear()
            self._live.discard(connection)
            if self._drained is not None and not self._live:
                self._drained.set()

    async def _forget(self, connection: Connection) -> None:
        # Keys that another connection took again meanwhile stay subscribed.
        await self.router.unsubscribe_orphans(connection, list(connection.keys))
        user_id = connection.principal.user_id
        if user_id is not None:
            try:
                await self.presence.disconnected(user_id, connection.id)
            except PropagationError as exc:
                logger.warning(
                    "presence could not forget %s of user %r: %s",
                    connection.id,
                    user_id,
                    exc,
                    extra=log_fields(connection),
                )

    async def subscribe(
        self,
        connection: Connection,
        topic: str,
        *,
        since: Position | None = None,
        greeting: Callable[[Registration], str] | None = None,
    ) -> Registration:
        """Add ``topic`` to a registered connection (authorization is the caller's job), and
        catch it up as :meth:`attach` does: ``greeting(...)`` (the gateway's ``subscribed``)
        is offered first, then what was missed since ``since``.

        Returns once notifications to the topic reach the connection. Raises
        :class:`~notifykit.errors.InvalidNotification` for a bad topic name and
        :class:`~notifykit.errors.PropagationError` if the subscription could not be
        confirmed; the connection is then left as it was. Subscribing again to a topic the
        connection has is a no-op (only the greeting is offered).
        """
        validate_topic(topic)
        key = topic_key(topic)
        if topic in connection.topics:
            registration = Registration()
            if greeting is not None:
                connection.offer(greeting(registration))
            return registration
        connection.topics.add(topic)
        try:
            return await self.router.catch_up(
                connection, (key,), None if since is None else {key: since}, greeting
            )
        except PropagationError:
            connection.topics.discard(topic)
            await self.router.unsubscribe_orphans(connection, (key,))
            raise

    async def unsubscribe(self, connection: Connection, topic: str) -> None:
        """Remove ``topic`` from a connection; a no-op if it was not subscribed."""
        connection.topics.discard(topic)
        key = topic_key(topic)
        self.router.leave(connection, (key,))
        await self.router.unsubscribe_orphans(connection, (key,))

    def local_connections(self, user_id: str) -> Collection[Receiver]:
        """This instance's connections of ``user_id``."""
        return self.state.members(user_key(user_id))

    # --- history --------------------------------------------------------------------------

    async def history(self, stream: str, *, after: int = 0, limit: int = 100) -> HistoryPage:
        """Up to ``limit`` notifications of ``stream`` (a routing key: ``user_key(...)``,
        ``topic_key(...)``, ``"auth"``, ``"all"``) after offset ``after``, as frames.

        Raises :class:`~notifykit.errors.HistoryOff` when no history is kept,
        :class:`~notifykit.errors.InvalidNotification` for a negative ``after`` or ``limit``,
        :class:`~notifykit.errors.PropagationError` if the backend cannot answer.
        """
        self._check_running()
        if after < 0 or limit < 0:
            raise InvalidNotification("after and limit must be 0 or more")
        found = (await self.propagator.read({stream: after}, limit)).get(stream)
        if found is None:
            raise HistoryOff("history is off: no notification is kept")
        frames = [self.router.frame_of(stream, payload) for _, payload in found.entries]
        return HistoryPage(
            stream, found.epoch, found.last, found.first, [f for f in frames if f is not None]
        )

    # --- presence (cluster-wide with a Redis presence) ------------------------------------

    async def is_online(self, user_id: str) -> bool:
        """True if ``user_id`` has a connection on any live instance."""
        return await self.presence.is_online(user_id)

    async def connections_of(self, user_id: str) -> list[str]:
        """The connection ids of ``user_id`` on every live instance."""
        return await self.presence.connections_of(user_id)

    async def online_users(self, limit: int = 10_000) -> list[str]:
        """Users online anywhere (at most ``limit``)."""
        return await self.presence.online_users(limit)

    async def online_count(self) -> int:
        """How many users are online anywhere."""
        return await self.presence.online_count()

    # --- introspection --------------------------------------------------------------------

    def statistics(self) -> Mapping[str, float]:
        """Gauges and counters for health checks and metrics."""
        stats: dict[str, float] = {
            "connections": self.state.connection_count,
            "users": self.state.user_count,
            "healthy": 1 if self.healthy else 0,
        }
        stats.update(self.metrics)
        for name, value in self.propagator.statistics().items():
            stats["propagator_" + name] = value
        for name, value in self.presence.statistics().items():
            stats["presence_" + name] = value
        return stats
