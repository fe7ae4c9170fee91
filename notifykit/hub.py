"""The hub: what an application holds to send notifications, and what routes them to connections.

::

    async with Hub() as hub:                       # in-memory propagation
        await hub.notify_user("42", "order.shipped", {"order": 7})

The hub owns the :class:`~notifykit.protocols.SocketState` and the
:class:`~notifykit.protocols.Propagator`. It keeps the propagator subscribed to exactly the
routing keys that have a connection here, and hands every payload it receives to those
connections — the same frame text to each, encoded once by the publisher.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any, Self

import anyio

from .envelope import Envelope, IdGenerator, pack, unpack
from .errors import PropagationError
from .memory import MemoryPropagator, MemorySocketState
from .model import (
    BROADCAST_KEY,
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
from .presence import MemoryPresence
from .wire import CloseCode

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping
    from types import TracebackType

    from .connection import Connection
    from .protocols import Authenticator, Presence, Propagator, SocketState, TopicPolicy
    from .service import NotifyApp

__all__ = ["Hub"]

logger = logging.getLogger("notifykit.hub")


class _Pending:
    """A subscription in flight that other connections for the same key wait on."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: BaseException | None = None

    async def wait(self) -> None:
        await self.done.wait()
        if self.error is not None:
            raise PropagationError(f"subscription failed: {self.error}") from self.error


class Hub:
    """Sends notifications and routes them to the connections this instance holds.

    ``propagator`` defaults to a :class:`~notifykit.memory.MemoryPropagator` (one process);
    pass a Redis propagator to scale out. ``presence`` defaults to a
    :class:`~notifykit.presence.MemoryPresence`; pass a ``RedisPresence`` for cluster-wide
    presence. ``subscribe_timeout`` bounds how long registering a
    connection may wait for the propagator to confirm a subscription. Use it as an async
    context manager: entering starts the propagator, leaving closes every connection with
    ``1001 going away`` (waiting up to ``shutdown_timeout`` seconds) and stops it.
    """

    def __init__(
        self,
        propagator: Propagator | None = None,
        *,
        presence: Presence | None = None,
        socket_state: SocketState | None = None,
        subscribe_timeout: float = 10.0,
        shutdown_timeout: float = 5.0,
    ) -> None:
        self.propagator: Propagator = propagator if propagator is not None else MemoryPropagator()
        self.state: SocketState = socket_state if socket_state is not None else MemorySocketState()
        self.presence: Presence = presence if presence is not None else MemoryPresence()
        self.metrics: Counter[str] = Counter()
        """Monotonic counters (``notifications_published``, ``frames_delivered``...)."""
        self._subscribe_timeout = subscribe_timeout
        self._shutdown_timeout = shutdown_timeout
        self._ids = IdGenerator()
        self._pending: dict[str, _Pending] = {}
        self._running = False
        self._drained: anyio.Event | None = None
        # The last payload unpacked: a publish to several keys hands the same payload object
        # for each key (in-process), which is then decoded once, not once per key.
        self._unpacked: tuple[bytes, str | None, str] = (b"", None, "")

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._running:
            raise RuntimeError("this hub is already running")
        await self.propagator.start(self._deliver)
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
        """Close every connection with 1001, wait for them to go, stop the propagator."""
        if not self._running:
            return
        self._running = False
        with anyio.CancelScope(shield=True):
            live = list(self.state.members(BROADCAST_KEY))
            if live:
                self._drained = anyio.Event()
                for connection in live:
                    connection.close(CloseCode.GOING_AWAY, "server shutting down")
                with anyio.move_on_after(self._shutdown_timeout):
                    await self._drained.wait()
            try:
                await self.presence.aclose()
            finally:
                await self.propagator.aclose()

    @property
    def running(self) -> bool:
        """True between entering and leaving the hub's context."""
        return self._running

    @property
    def healthy(self) -> bool:
        """False while the propagator cannot reach its backend."""
        return self._running and self.propagator.healthy and self.presence.healthy

    # --- sending --------------------------------------------------------------------------

    async def publish(
        self, target: Target, event: str, data: Any = None, *, exclude: str | None = None
    ) -> str:
        """Send one notification to ``target`` and return its id.

        ``exclude`` is a connection id (from the ``welcome`` frame) that will not receive it.
        Raises :class:`~notifykit.errors.InvalidNotification` for a bad event or data that is
        not JSON, and :class:`~notifykit.errors.PropagationError` if it could not be sent.
        """
        if not self._running:
            raise RuntimeError("the hub is not running: use `async with hub:`")
        envelope = Envelope(self._ids(), event, data, target, exclude)
        await self.propagator.publish(envelope.keys(), pack(envelope))
        self.metrics["notifications_published"] += 1
        return envelope.id

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

    def _deliver(self, key: str, payload: bytes) -> None:
        members = self.state.members(key)
        if not members:
            return
        last, exclude, frame = self._unpacked
        if payload is not last:
            try:
                exclude, frame = unpack(payload)
            except ValueError:
                self.metrics["malformed_payloads"] += 1
                logger.warning("skipped a malformed payload on key %r", key)
                return
            self._unpacked = (payload, exclude, frame)
        if exclude is None:
            for connection in members:
                connection.offer(frame)
            sent = len(members)
        else:
            sent = 0
            for connection in members:
                if connection.id != exclude:
                    connection.offer(frame)
                    sent += 1
        self.metrics["frames_delivered"] += sent

    # --- registration ---------------------------------------------------------------------

    async def attach(self, connection: Connection) -> None:
        """Register a connection under its principal's keys.

        Returns once the propagator confirmed every subscription the connection needs, so a
        notification published after this returns reaches it. Raises
        :class:`~notifykit.errors.PropagationError` if that could not be confirmed; the caller
        must then :meth:`detach` it.
        """
        if not self._running:
            raise RuntimeError("the hub is not running: use `async with hub:`")
        await self._join(connection, connection.principal.routing_keys())
        user_id = connection.principal.user_id
        if user_id is not None:
            try:
                await self.presence.connected(user_id, connection.id)
            except PropagationError as exc:
                # Not fatal: delivery works, and the presence heartbeat registers it later.
                logger.warning("presence could not record %s: %s", connection.id, exc)

    async def detach(self, connection: Connection) -> None:
        """Unregister a connection from every key; idempotent; never raises for the propagator."""
        had_keys = bool(connection.keys)
        await self._leave(connection, list(connection.keys))
        connection.topics.clear()
        user_id = connection.principal.user_id
        if had_keys and user_id is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await self.presence.disconnected(user_id, connection.id)
                except PropagationError as exc:
                    logger.warning("presence could not forget %s: %s", connection.id, exc)
        if self._drained is not None and self.state.connection_count == 0:
            self._drained.set()

    async def subscribe(self, connection: Connection, topic: str) -> None:
        """Add ``topic`` to a registered connection (authorization is the caller's job)."""
        validate_topic(topic)
        connection.topics.add(topic)
        await self._join(connection, (topic_key(topic),))

    async def unsubscribe(self, connection: Connection, topic: str) -> None:
        """Remove ``topic`` from a connection; a no-op if it was not subscribed."""
        connection.topics.discard(topic)
        await self._leave(connection, (topic_key(topic),))

    def local_connections(self, user_id: str) -> Collection[Connection]:
        """This instance's connections of ``user_id``."""
        return self.state.members(user_key(user_id))

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

    async def _join(self, connection: Connection, keys: Iterable[str]) -> None:
        new: list[str] = []
        waits: list[_Pending] = []
        for key in keys:
            if key in connection.keys:
                continue
            connection.keys.add(key)
            if self.state.add(key, connection):
                new.append(key)
            elif (pending := self._pending.get(key)) is not None:
                waits.append(pending)
        if new:
            pending = _Pending()
            for key in new:
                self._pending[key] = pending
            # Shielded: a connection that leaves mid-subscribe must not leave others waiting
            # on a subscription in an unknown state.
            with anyio.CancelScope(shield=True):
                try:
                    with anyio.fail_after(self._subscribe_timeout):
                        await self.propagator.subscribe(new)
                except (PropagationError, TimeoutError) as exc:
                    pending.error = exc
                finally:
                    for key in new:
                        if self._pending.get(key) is pending:
                            del self._pending[key]
                    pending.done.set()
            waits.append(pending)
        for pending in waits:
            await pending.wait()

    async def _leave(self, connection: Connection, keys: Iterable[str]) -> None:
        gone = []
        for key in keys:
            if key in connection.keys:
                connection.keys.discard(key)
                if self.state.remove(key, connection):
                    gone.append(key)
        if gone:
            with anyio.CancelScope(shield=True):
                try:
                    with anyio.move_on_after(self._subscribe_timeout):
                        await self.propagator.unsubscribe(gone)
                except PropagationError as exc:
                    # Harmless: payloads for keys with no connection are dropped on arrival.
                    logger.warning("unsubscribe from %d keys failed: %s", len(gone), exc)

    # --- serving --------------------------------------------------------------------------

    def asgi_app(
        self,
        authenticator: Authenticator,
        *,
        api_key: str | Iterable[str] | None = None,
        allowed_origins: Iterable[str] = (),
        allow_anonymous: bool = False,
        topic_policy: TopicPolicy | None = None,
        max_publish_bytes: int = 1024 * 1024,
        **gateway_options: Any,
    ) -> NotifyApp:
        """A mountable ASGI app serving this hub (needs the ``starlette`` extra).

        Routes: ``/ws`` (websocket), ``POST /publish`` (with ``api_key``), ``/healthz``,
        ``/readyz``, ``/metrics``. Remaining keyword arguments go to
        :class:`~notifykit.gateway.Gateway` (``queue_size``, ``max_frame_bytes``...).
        """
        from .gateway import Gateway
        from .service import NotifyApp

        gateway = Gateway(
            self,
            authenticator,
            topic_policy=topic_policy,
            allow_anonymous=allow_anonymous,
            allowed_origins=allowed_origins,
            **gateway_options,
        )
        keys = [api_key] if isinstance(api_key, str) else list(api_key or ())
        return NotifyApp(gateway, api_keys=keys, max_publish_bytes=max_publish_bytes)

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
