"""The three seams of notifykit, as ``typing.Protocol`` classes with their contracts.

* :class:`Authenticator` — turns a token into a :class:`~notifykit.model.Principal`.
* :class:`SocketState` — which connections *this instance* holds, under which routing keys.
* :class:`Propagator` — carries ``(routing key, payload)`` between instances.
* :class:`Transport` — the little a gateway needs from a framework's websocket.

Names follow the NestJS design notifykit descends from. Implementations live in
:mod:`notifykit.memory`, :mod:`notifykit.jwt` and ``notifykit.redis``; the executable form of
these contracts is :mod:`notifykit.testing.conformance`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    from .connection import Connection
    from .model import Principal

__all__ = ["Authenticator", "Deliver", "Propagator", "SocketState", "TopicPolicy", "Transport"]

Deliver: TypeAlias = Callable[[str, bytes], None]
"""Called by a propagator for every message it receives: ``deliver(routing_key, payload)``.

It is synchronous and never blocks (it only hands frames to bounded per-connection queues), so a
propagator's reader can call it inline without ever waiting on a slow websocket.
"""

TopicPolicy: TypeAlias = Callable[["Principal", str], bool | Awaitable[bool]]
"""Decides whether a principal may subscribe to a topic; may be sync or async."""


@runtime_checkable
class Authenticator(Protocol):
    """Verifies a token and says who presented it."""

    async def authenticate(self, token: str) -> Principal:
        """Return the principal the token proves.

        Raises :class:`~notifykit.errors.TokenExpired` for an expired token and
        :class:`~notifykit.errors.AuthenticationError` for any other invalid token; the
        exception's message is shown to the client, so it must not contain secrets.
        Never raises anything else for a bad token, whatever bytes it holds.
        """
        ...


@runtime_checkable
class SocketState(Protocol):
    """The connections this instance holds, indexed by routing key.

    Adding and removing are O(1); a key whose last connection leaves is forgotten (no empty
    entries are left behind). It is local to one instance and not thread-safe: all calls happen
    on the event loop. The hub registers every connection under ``BROADCAST_KEY`` (``"all"``)
    and every authenticated one under ``u:<user id>``; the counts rely on that convention.
    """

    def add(self, key: str, connection: Connection) -> bool:
        """Put ``connection`` under ``key``; return True if ``key`` had no connection before."""
        ...

    def remove(self, key: str, connection: Connection) -> bool:
        """Take ``connection`` from under ``key``; return True if ``key`` now has none.

        Removing a connection that is not there is a no-op that returns False.
        """
        ...

    def members(self, key: str) -> Collection[Connection]:
        """The connections under ``key`` (empty if none).

        May be a live view: callers must not mutate it, and must copy it before adding or
        removing connections while iterating.
        """
        ...

    def keys(self) -> Collection[str]:
        """Every key with at least one connection (what a propagator must stay subscribed to)."""
        ...

    @property
    def connection_count(self) -> int:
        """How many distinct connections are registered."""
        ...

    @property
    def user_count(self) -> int:
        """How many distinct users have at least one connection."""
        ...


@runtime_checkable
class Propagator(Protocol):
    """Carries payloads between instances, routed by key.

    Contract:

    * ``start(deliver)`` begins the lifecycle; ``aclose()`` ends it, is idempotent, and once it
      returns ``deliver`` is never called again.
    * After ``subscribe(keys)`` returns, every payload published to one of ``keys`` — by this
      instance or any other sharing the backend — is passed to ``deliver(key, payload)``
      exactly once, in publish order per key, until ``unsubscribe``. Payloads for keys this
      instance is not subscribed to are not delivered (and, for networked implementations,
      not even received).
    * ``subscribe``/``unsubscribe`` are idempotent and take effect in the order they are
      called; a key subscribed by several callers is one subscription (the caller — the hub —
      counts connections, the propagator does not).
    * ``publish`` returns once the backend has accepted the payload for every key; it raises
      :class:`~notifykit.errors.PropagationError` if it cannot, never a backend's own error.
      Publishing to a key nobody subscribed to succeeds and delivers nothing.
    * ``deliver`` raising is logged and never ends delivery of later payloads.
    * ``healthy`` is False while the backend is unreachable (the service reports "degraded").
    """

    async def start(self, deliver: Deliver) -> None:
        """Start carrying payloads; received ones go to ``deliver``."""
        ...

    async def aclose(self) -> None:
        """Stop, drop every subscription and release connections. Idempotent."""
        ...

    async def subscribe(self, keys: Collection[str]) -> None:
        """Receive payloads for ``keys``; returns once the subscription is confirmed."""
        ...

    async def unsubscribe(self, keys: Collection[str]) -> None:
        """Stop receiving payloads for ``keys``."""
        ...

    async def publish(self, keys: Sequence[str], payload: bytes) -> None:
        """Send ``payload`` to every instance subscribed to any of ``keys`` (once per key)."""
        ...

    @property
    def healthy(self) -> bool:
        """False while the backend is unreachable."""
        ...

    def statistics(self) -> Mapping[str, int]:
        """Counters for metrics (published, received, reconnects...); names are snake_case."""
        ...


@runtime_checkable
class Transport(Protocol):
    """One accepted-or-about-to-be websocket, as an adapter presents it to the gateway.

    Adapters (ASGI, Django Channels, ``websockets``) implement it in a few lines; the gateway
    never sees a framework object.
    """

    async def accept(self, subprotocol: str | None) -> None:
        """Complete the handshake, selecting ``subprotocol`` (or none)."""
        ...

    async def receive(self) -> str | bytes | None:
        """The next message from the client: text, bytes, or None once the client is gone."""
        ...

    async def send(self, text: str) -> None:
        """Send one text frame; raise :class:`~notifykit.errors.TransportClosed` if gone."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code`` and ``reason``; never raises, even if already closed."""
        ...
