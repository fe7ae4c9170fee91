"""The three seams of notifykit, as ``typing.Protocol`` classes with their contracts.

* :class:`Authenticator` — turns a token into a :class:`~notifykit.model.Principal`.
* :class:`HandshakeAuthenticator` — the same from the whole handshake (a login session, a
  cookie, a user the web framework resolved), for servers whose users log in to the host app.
* :class:`SocketState` — which connections *this instance* holds, under which routing keys.
* :class:`Propagator` — carries ``(routing key, payload)`` between instances.
* :class:`Presence` — who is online, across every instance.
* :class:`Transport` — the little a gateway needs from a framework's websocket.
* :class:`Receiver` — what a socket state holds and the hub hands frames to.

Names follow the NestJS design notifykit descends from. Implementations live in
:mod:`notifykit.memory`, :mod:`notifykit.jwt`, ``notifykit.redis`` and
``notifykit.adapters``; the executable form of these contracts is
:mod:`notifykit.testing.conformance`. This module imports nothing else from notifykit at run
time: every layer may depend on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    from .model import Handshake, Principal, StreamHistory

__all__ = [
    "Authenticator",
    "Deliver",
    "HandshakeAuthenticator",
    "Presence",
    "Propagator",
    "Receiver",
    "SocketState",
    "TopicPolicy",
    "Transport",
]

Deliver: TypeAlias = Callable[[str, bytes], None]
"""Called by a propagator for every message it receives: ``deliver(routing_key, payload)``.

It is synchronous and never blocks (it only hands frames to bounded per-connection queues), so a
propagator's reader can call it inline without ever waiting on a slow websocket. With history,
``payload`` is stamped with its place in the key's stream (:func:`notifykit.envelope.stamp`).
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
class HandshakeAuthenticator(Protocol):
    """Says who opened a websocket from its whole handshake, not only a bearer token.

    For users who log in to the host application (a session cookie, a user that Starlette's
    or Django Channels' middleware put in the scope) rather than holding a JWT. The gateway
    prefers it to :meth:`Authenticator.authenticate` when an authenticator has both; an
    in-band ``refresh`` frame still goes to ``authenticate(token)``, and is refused if the
    authenticator has none.
    """

    cookie_based: bool
    """True if it trusts credentials a browser sends by itself (cookies): the gateway then
    requires an ``allowed_origins`` list, since any web page could otherwise open a websocket
    with the user's cookies (cross-site websocket hijacking)."""

    async def authenticate_handshake(self, handshake: Handshake) -> Principal | None:
        """Return who ``handshake`` proves, or None if it carries no credentials at all (the
        gateway then admits the client anonymously if allowed, else closes it with 4001).

        Raises :class:`~notifykit.errors.AuthenticationError` (or
        :class:`~notifykit.errors.TokenExpired`) for credentials that do not prove anyone;
        its message is shown to the client. Never raises anything else for bad credentials.
        ``handshake.request`` is the framework's own request (see
        :class:`~notifykit.model.Handshake`).
        """
        ...


@runtime_checkable
class Receiver(Protocol):
    """One registered connection, as a :class:`SocketState` holds it and the hub uses it.

    :class:`~notifykit.connection.Connection` is the implementation; the protocol names the
    little the routing layer relies on, so a socket state never depends on a concrete class.
    """

    @property
    def id(self) -> str:
        """The connection's id (unique on this instance; what ``exclude=`` names)."""
        ...

    @property
    def user_id(self) -> str | None:
        """The connection's user, or None if anonymous."""
        ...

    def offer(self, frame: str) -> None:
        """Send ``frame`` (JSON text) as soon as possible; never waits and never raises."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Ask for the connection to be closed with ``code``; never waits."""
        ...


@runtime_checkable
class SocketState(Protocol):
    """The connections this instance holds, indexed by routing key.

    Adding and removing are O(1); a key whose last connection leaves is forgotten (no empty
    entries are left behind). It is local to one instance and not thread-safe: all calls happen
    on the event loop. The hub registers every connection under ``BROADCAST_KEY`` (``"all"``)
    and every authenticated one under ``u:<user id>``; the counts rely on that convention.
    """

    def add(self, key: str, connection: Receiver) -> bool:
        """Put ``connection`` under ``key``; return True if ``key`` had no connection before."""
        ...

    def remove(self, key: str, connection: Receiver) -> bool:
        """Take ``connection`` from under ``key``; return True if ``key`` now has none.

        Removing a connection that is not there is a no-op that returns False.
        """
        ...

    def members(self, key: str) -> Collection[Receiver]:
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

    History (optional: a propagator may keep none, then ``read`` returns ``{}``):

    * ``publish`` appends the payload to the stream of each key — offsets 1, 2, 3, ... with no
      holes, an epoch that changes whenever the stream's history is lost — and delivers it
      stamped with that place (:func:`notifykit.envelope.stamp`), in offset order per key.
      Assigning the offset and publishing are one atomic step, so live delivery and history
      always agree.
    * ``read`` returns each stream's :class:`~notifykit.model.StreamHistory`; reading a stream
      that does not exist yet creates its epoch (offset 0), so a position handed to a client is
      always a real one.
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

    async def barrier(self, keys: Collection[str]) -> None:
        """Return once every payload published to ``keys`` before this call — by any
        instance — has been passed to ``deliver`` (for subscribed keys). With history, this
        is what lets a joining connection take what it holds as everything after a read."""
        ...

    async def read(self, after: Mapping[str, int | None], limit: int) -> dict[str, StreamHistory]:
        """The history of the stream of each key in ``after``: for a key mapped to an offset,
        with up to ``limit`` entries after it; for a key mapped to None, with none. Keys with
        no history (all of them when history is off) are left out. Raises
        :class:`~notifykit.errors.PropagationError` if the backend cannot answer."""
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
    """One websocket, as an adapter presents it to the gateway.

    Adapters (ASGI, Django Channels, ``websockets``) implement it in a few lines; the gateway
    and the connection never see a framework object. The outbound side is split like
    ``websockets``' sans-I/O ``send_text()``/``data_to_send()``: :meth:`send_now` hands a
    frame over if that needs no waiting, :meth:`send` waits until it can. The connection
    decides what to send, when it must wait and when a client is too slow; a transport only
    hands frames to its framework. Every coroutine a transport returns is awaited by the task
    that called the method (trio enforces this).
    """

    async def accept(self, subprotocol: str | None) -> None:
        """Complete the handshake, selecting ``subprotocol`` (or none)."""
        ...

    async def receive(self) -> str | bytes | None:
        """The next message from the client: text, bytes, or None once the client is gone."""
        ...

    def send_now(self, frame: str) -> bool:
        """Hand one text frame to the framework if that needs no waiting.

        Returns True once the frame is handed over (it will be written, in order, after every
        frame handed over before it), False if it could only be sent by waiting — then
        nothing happened and the caller sends it later with :meth:`send`. Called from any
        task (the publisher's, usually); it must not await, block or start a task on a
        backend other than its own. Raises :class:`~notifykit.errors.TransportClosed` (or any
        ``OSError``) if the client is gone.
        """
        ...

    async def send(self, frame: str) -> None:
        """Send one text frame, waiting while the client reads too slowly; raise
        :class:`~notifykit.errors.TransportClosed` (or any ``OSError``) if the client is gone.
        Called by one task at a time (the connection's writer), never concurrently."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code`` and ``reason``, after the frames already handed over; never
        raises, even if already closed. May wait for the client to read (callers bound it
        and then :meth:`abort`)."""
        ...

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake: for a client that
        stopped reading, so that neither its socket nor what is buffered for it lingers.
        Idempotent; never raises."""
        ...


@runtime_checkable
class Presence(Protocol):
    """Which users are online, across every instance of a deployment.

    Each instance records its own authenticated connections (``connected``/``disconnected``);
    any instance can ask about any user. Contract:

    * ``start()`` begins the lifecycle and is a no-op if already started; it does not fail
      because the backend is unreachable (``healthy`` says so instead). ``aclose()`` ends it,
      removes every entry this instance recorded at once, and is idempotent.
    * Before ``start()`` and after ``aclose()``, every other call raises
      :class:`~notifykit.errors.NotRunning` (a :class:`RuntimeError`),
      except ``disconnected``, which is a no-op after ``aclose()`` (the entries are gone).
    * When ``connected(user, conn)`` returns, every instance sees ``user`` online with ``conn``
      among its connections; when ``disconnected`` returns, no instance sees ``conn`` any more,
      and ``user`` is offline once no instance holds a connection of theirs. Both are
      idempotent (a connection is recorded once, however often it is reported), cheap, and safe
      to call from many tasks at once; concurrent calls may share one round trip.
    * ``is_online`` and ``connections_of`` are exact for live instances. ``online_users`` and
      ``online_count`` count each user once however many connections and instances they have;
      a networked implementation may lag behind a disconnection by a bounded time (it says
      how long). An instance that dies without ``aclose()`` stops counting within a bounded,
      configurable time (its ``ttl``).
    * Backend failures raise :class:`~notifykit.errors.PropagationError`, never a backend's own
      error. A ``connected`` that raised is still remembered by this instance and registered
      once the backend is back; a ``disconnected`` that raised expires within the ``ttl``.
    * ``healthy`` is False while the backend is unreachable.
    """

    async def start(self) -> None:
        """Begin recording (for Redis: start the heartbeat). A no-op if already started."""
        ...

    async def aclose(self) -> None:
        """Stop, and remove every entry this instance recorded. Idempotent."""
        ...

    async def connected(self, user_id: str, connection_id: str) -> None:
        """Record that this instance holds connection ``connection_id`` of ``user_id``."""
        ...

    async def disconnected(self, user_id: str, connection_id: str) -> None:
        """Forget connection ``connection_id`` of ``user_id``; unknown ones are a no-op."""
        ...

    async def is_online(self, user_id: str) -> bool:
        """True if ``user_id`` has a connection on any live instance."""
        ...

    async def connections_of(self, user_id: str) -> list[str]:
        """The ids of ``user_id``'s connections on every live instance, in no set order."""
        ...

    async def online_users(self, limit: int = 10_000) -> list[str]:
        """Up to ``limit`` distinct users online anywhere, in no set order (none if ``limit``
        is 0 or less)."""
        ...

    async def online_count(self) -> int:
        """How many distinct users are online anywhere."""
        ...

    @property
    def healthy(self) -> bool:
        """False while the backend is unreachable."""
        ...

    def statistics(self) -> Mapping[str, int]:
        """Counters for metrics (local connections, heartbeats...); names are snake_case."""
        ...
