"""The gateway: accepts a websocket, authenticates it, registers it, and pumps notifications to it.

Per connection it runs one reader (client frames, token expiry) in the task the adapter calls it
from, and a writer task only while outbound frames have to wait (see
:mod:`notifykit.connection`). Every way out — the client leaving, a bad token, a slow consumer,
the hub shutting down, cancellation, a bug — ends the same way: the connection leaves routing,
its socket is closed with the documented code (or dropped if the client does not take the
close), and then the hub's bookkeeping runs, bounded. Nothing is left behind.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from .connection import DEFAULT_QUEUE_BYTES, DEFAULT_QUEUE_SIZE, Connection
from .errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidNotification,
    NotRunning,
    PropagationError,
    ProtocolError,
)
from .model import Handshake, Principal, topic_key, validate_topic
from .topics import claim_topics_policy
from .wire import (
    SUBPROTOCOL,
    CloseCode,
    Error,
    ErrorCode,
    Ping,
    Pong,
    Position,
    Refresh,
    Refreshed,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Welcome,
    encode,
    parse_client,
    parse_positions,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from anyio.abc import TaskGroup

    from .hub import Hub
    from .protocols import Authenticator, HandshakeAuthenticator, TopicPolicy, Transport
    from .recovery import Registration
    from .wire import ClientFrame

__all__ = ["Gateway"]

logger = logging.getLogger("notifykit.gateway")


class Gateway:
    """Serves websocket connections for a :class:`~notifykit.hub.Hub`.

    Options:

    * ``authenticator`` — verifies tokens (e.g. :class:`~notifykit.jwt.JWTAuthenticator`), or
      a :class:`~notifykit.protocols.HandshakeAuthenticator` that reads the whole handshake
      (the host app's login session).
    * ``topic_policy`` — ``(principal, topic) -> bool`` (sync or async) deciding who may
      subscribe to what; default: the topics listed in the token's ``topics`` claim.
    * ``allow_anonymous`` — accept clients without a token; they receive only broadcasts.
    * ``allowed_origins`` — browser ``Origin`` allow-list; empty means no check. A request
      without an ``Origin`` header is a non-browser client and is not refused by it.
    * ``max_frame_bytes`` — larger client frames are refused with ``frame_too_large``.
    * ``queue_size`` and ``queue_bytes`` — outbound frames and bytes a connection may have
      waiting before it is closed as a slow consumer (4008).
    * ``max_topics`` — topics one connection may subscribe to.
    * ``max_bad_frames`` — consecutive invalid frames tolerated before closing with 4400.
    * ``close_timeout`` — seconds a close may take to flush what was queued and send its close
      frame; a client that does not read them in time has its connection dropped (aborted).
      A slow consumer still reading gets its 4008 if the kernel lets the frame it was sending
      through in time (a socket becomes writable again once about a third of its send
      buffer, up to 4 MiB on Linux, is free); one that reads nothing is dropped.
    * ``clock`` — the wall clock token expiry is measured against (Unix seconds); tests pass
      their own instead of sleeping.

    Raises :class:`~notifykit.errors.ConfigurationError` for an option that cannot work.
    """

    def __init__(
        self,
        hub: Hub,
        authenticator: Authenticator | HandshakeAuthenticator,
        *,
        topic_policy: TopicPolicy | None = None,
        allow_anonymous: bool = False,
        allowed_origins: Iterable[str] = (),
        max_frame_bytes: int = 64 * 1024,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        max_topics: int = 100,
        max_bad_frames: int = 10,
        close_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        by_handshake = getattr(authenticator, "authenticate_handshake", None)
        by_token = getattr(authenticator, "authenticate", None)
        if not callable(by_handshake) and not callable(by_token):
            raise ConfigurationError(
                "authenticator must have an async authenticate(token) or "
                "authenticate_handshake(handshake)"
            )
        if topic_policy is not None and not callable(topic_policy):
            raise ConfigurationError("topic_policy must be a callable (principal, topic) -> bool")
        self.hub = hub
        self.authenticator = authenticator
        self.topic_policy: TopicPolicy = topic_policy or claim_topics_policy()
        self.allow_anonymous = allow_anonymous
        self.allowed_origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        cookie_based = callable(by_handshake) and getattr(authenticator, "cookie_based", False)
        if cookie_based and not self.allowed_origins:
            raise ConfigurationError(
                "an authenticator that trusts cookies needs allowed_origins: without it "
                "any web page could open a websocket with your users' cookies"
            )
        self._by_handshake: Callable[[Handshake], Awaitable[Principal | None]] | None = (
            by_handshake if callable(by_handshake) else None
        )
        self._by_token: Callable[[str], Awaitable[Principal]] | None = (
            by_token if callable(by_token) else None
        )
        self.max_frame_bytes = _at_least("max_frame_bytes", max_frame_bytes, 1)
        self.queue_size = _at_least("queue_size", queue_size, 1)
        self.queue_bytes = _at_least("queue_bytes", queue_bytes, 1)
        self.max_topics = _at_least("max_topics", max_topics, 0)
        self.max_bad_frames = _at_least("max_bad_frames", max_bad_frames, 1)
        if not isinstance(close_timeout, int | float) or not close_timeout > 0:
            raise ConfigurationError(
                f"close_timeout must be seconds above 0, not {close_timeout!r}"
            )
        self.close_timeout = float(close_timeout)
        self.clock = clock

    # --- the connection's life ------------------------------------------------------------

    async def serve(self, transport: Transport, handshake: Handshake) -> None:
        """Handle one websocket from handshake to close. Never raises for anything the client
        does; returns when the connection is over and unregistered.

        The order of the end is fixed: the connection leaves routing (no I/O), its socket is
        closed — queued frames, then the close frame, bounded by ``close_timeout``, else the
        connection is dropped — and only then does the hub's network bookkeeping run
        (unsubscribe, presence), bounded too. A close never waits on Redis.
        """
        metrics = self.hub.metrics
        subprotocol = SUBPROTOCOL if SUBPROTOCOL in handshake.subprotocols else None
        if not self._origin_allowed(handshake):
            metrics["origin_refusals"] += 1
            await self._refuse(transport, subprotocol, CloseCode.FORBIDDEN, "origin not allowed")
            return
        try:
            principal = await self._authenticate(handshake)
        except AuthenticationError as exc:
            metrics["auth_failures"] += 1
            await self._refuse(transport, subprotocol, CloseCode.UNAUTHORIZED, str(exc))
            return
        try:
            resume = _resume(handshake)
        except ProtocolError as exc:
            metrics["bad_frames"] += 1
            await self._refuse(transport, subprotocol, CloseCode.BAD_FRAME, str(exc))
            return
        if not self.hub.running:
            await self._refuse(transport, subprotocol, CloseCode.TRY_AGAIN_LATER, "not running")
            return

        connection = Connection(principal, queue_size=self.queue_size, queue_bytes=self.queue_bytes)
        del handshake  # nothing of the request stays alive as long as the connection
        await transport.accept(subprotocol)
        metrics["connections_opened"] += 1
        try:
            async with anyio.create_task_group() as writers:
                await self._converse(connection, transport, writers, resume)
                self.hub.unregister(connection)
                if connection.close_code == CloseCode.SLOW_CONSUMER:
                    metrics["slow_consumer_closes"] += 1
                    logger.warning("closing slow consumer %s", connection.id)
                deadline = anyio.current_time() + self.close_timeout
                flushed = True
                if connection.close_code is not None:
                    # What was accepted before the close (for a slow consumer, only the frame
                    # already on its way: its queue was dropped).
                    with anyio.CancelScope(deadline=deadline) as flushing:
                        await connection.flush()
                    flushed = not flushing.cancelled_caught
                writers.cancel_scope.cancel()  # the writer, if it is still waiting
            await self._close(connection, transport, deadline if flushed else None)
        finally:
            self.hub.unregister(connection)  # also when cancelled from outside
            with anyio.CancelScope(shield=True):
                await self.hub.detach(connection)
            connection.release()
            metrics["connections_closed"] += 1

    async def _converse(
        self,
        connection: Connection,
        transport: Transport,
        writers: TaskGroup,
        resume: dict[str, Position] | None,
    ) -> None:
        """Register the connection, send its welcome, and serve it until it ends."""

        def welcome(registration: Registration) -> str:
            principal = connection.principal
            return encode(
                Welcome(
                    connection.id,
                    principal.user_id,
                    _unix(principal.expires_at),
                    registration.positions,
                    registration.recovered,
                )
            )

        try:
            # close() cancels this scope; its deadline is the token's expiry, which a refresh
            # moves.
            with anyio.CancelScope(deadline=self._deadline(connection.principal)) as scope:
                connection.bind(scope)
                # The welcome is queued once registered, before what was missed: it is always
                # the first frame, and it promises that later notifications will arrive.
                await self.hub.attach(connection, resume=resume, greeting=welcome)
                connection.start_sending(transport, writers)
                await self._read(connection, transport, scope)
            if connection.close_code is None and anyio.current_time() >= scope.deadline:
                connection.close(CloseCode.UNAUTHORIZED, "token expired")
        except (PropagationError, NotRunning) as exc:
            logger.warning("could not register connection %s: %s", connection.id, exc)
            connection.release()  # drop the queued welcome: it must not be sent
            connection.close(CloseCode.TRY_AGAIN_LATER, "cannot register now; retry later")
        except Exception:
            logger.exception("connection %s failed", connection.id)
            connection.close(CloseCode.INTERNAL_ERROR, "internal error")

    async def _close(
        self, connection: Connection, transport: Transport, deadline: float | None
    ) -> None:
        """Send the close frame by ``deadline``, else drop the connection (at once for no
        deadline: the flush before it did not finish). A no-op once the client is gone."""
        code = connection.close_code
        if code is None:  # the client left, or a send found it gone: nothing to send
            return
        if deadline is not None:
            with anyio.CancelScope(deadline=deadline) as closing:
                await transport.close(code, connection.close_reason)
            if not closing.cancelled_caught:
                return
        transport.abort()
        self.hub.metrics["aborted_connections"] += 1
        logger.warning(
            "connection %s did not take its close frame (%d) within %g s: dropped",
            connection.id,
            code,
            self.close_timeout,
        )

    async def _refuse(
        self, transport: Transport, subprotocol: str | None, code: int, reason: str
    ) -> None:
        # Accept only to close at once: browsers cannot read why a handshake was refused, but
        # they can read a close code and reason.
        await transport.accept(subprotocol)
        with anyio.move_on_after(self.close_timeout) as bounded:
            await transport.close(code, reason)
        if bounded.cancelled_caught:
            transport.abort()

    async def _read(
        self, connection: Connection, transport: Transport, expiry: anyio.CancelScope
    ) -> None:
        bad_frames = 0
        while True:
            message = await transport.receive()
            if message is None:
                return
            try:
                if _too_large(message, self.max_frame_bytes):
                    raise ProtocolError(
                        f"frame larger than {self.max_frame_bytes} bytes",
                        code=ErrorCode.FRAME_TOO_LARGE,
                    )
                frame = parse_client(message)
            except ProtocolError as exc:
                self.hub.metrics["bad_frames"] += 1
                bad_frames += 1
                if bad_frames >= self.max_bad_frames:
                    connection.close(CloseCode.BAD_FRAME, "too many invalid frames")
                    return
                connection.offer(encode(Error(exc.code, str(exc), exc.ref)))
                await anyio.lowlevel.checkpoint()
                continue
            bad_frames = 0
            await self._handle(connection, frame, expiry)
            # A client that sends faster than it reads must not starve the connection's writer
            # (a server's receive returns at once while frames are buffered).
            await anyio.lowlevel.checkpoint()

    # --- client requests ------------------------------------------------------------------

    async def _handle(
        self, connection: Connection, frame: ClientFrame, expiry: anyio.CancelScope
    ) -> None:
        match frame:
            case Ping(ref):
                connection.offer(encode(Pong(ref)))
            case Subscribe(topic, ref, since):
                refusal = await self._subscribe(connection, topic, ref, since)
                if refusal is not None:
                    connection.offer(encode(refusal))
            case Unsubscribe(topic, ref):
                if topic in connection.topics:
                    await self.hub.unsubscribe(connection, topic)
                connection.offer(encode(Unsubscribed(topic, ref)))
            case Refresh(token, ref):
                connection.offer(encode(await self._refresh(connection, token, ref, expiry)))

    async def _subscribe(
        self, connection: Connection, topic: str, ref: str | None, since: Position | None
    ) -> Error | None:
        """Subscribe, offering ``subscribed`` and what was missed since ``since``; or return
        why not."""
        try:
            validate_topic(topic)
        except InvalidNotification as exc:
            return Error(ErrorCode.INVALID_TOPIC, str(exc), ref)
        if topic not in connection.topics:
            if len(connection.topics) >= self.max_topics:
                return Error(ErrorCode.FORBIDDEN, f"at most {self.max_topics} topics", ref)
            if not await self._may_subscribe(connection.principal, topic):
                return Error(ErrorCode.FORBIDDEN, f"not allowed to subscribe to {topic!r}", ref)

        def subscribed(registration: Registration) -> str:
            position = registration.positions.get(topic_key(topic))
            return encode(Subscribed(topic, ref, position, registration.recovered))

        try:
            await self.hub.subscribe(connection, topic, since=since, greeting=subscribed)
        except PropagationError:  # the hub left the connection as it was
            return Error(ErrorCode.UNAVAILABLE, "subscription failed; retry later", ref)
        return None

    async def _may_subscribe(self, principal: Principal, topic: str) -> bool:
        if principal.is_anonymous:
            return False
        try:
            verdict = self.topic_policy(principal, topic)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except Exception:
            logger.exception("topic policy failed for %r; refusing", topic)
            return False
        return verdict is True

    async def _refresh(
        self, connection: Connection, token: str, ref: str | None, expiry: anyio.CancelScope
    ) -> Refreshed | Error:
        if connection.principal.is_anonymous:
            return Error(ErrorCode.FORBIDDEN, "anonymous connections cannot refresh", ref)
        if self._by_token is None:
            return Error(ErrorCode.FORBIDDEN, "this server does not accept tokens", ref)
        try:
            principal = await self._by_token(token)
        except AuthenticationError as exc:
            return Error(ErrorCode.FORBIDDEN, f"refresh refused: {exc}", ref)
        if principal.user_id != connection.principal.user_id:
            return Error(ErrorCode.FORBIDDEN, "refresh token is for another user", ref)
        connection.principal = principal
        expiry.deadline = self._deadline(principal)
        # The new token decides from now on: leave the topics it no longer allows, each
        # announced with an unsubscribed frame (no ref: the server initiated it).
        for topic in sorted(connection.topics):
            if not await self._may_subscribe(principal, topic):
                await self.hub.unsubscribe(connection, topic)
                connection.offer(encode(Unsubscribed(topic)))
        return Refreshed(_unix(principal.expires_at), ref)

    # --- checks ---------------------------------------------------------------------------

    def _origin_allowed(self, handshake: Handshake) -> bool:
        origin = handshake.headers.get("origin")
        if not self.allowed_origins or origin is None:
            return True
        return origin.rstrip("/").lower() in self.allowed_origins

    def _deadline(self, principal: Principal) -> float:
        """The token's expiry on anyio's clock (``inf`` for a token that never expires)."""
        if principal.expires_at is None:
            return math.inf
        return anyio.current_time() + (principal.expires_at - self.clock())

    async def _authenticate(self, handshake: Handshake) -> Principal:
        if self._by_handshake is not None:
            principal = await self._by_handshake(handshake)
            if principal is not None:
                return principal
            if self.allow_anonymous:
                return Principal(None)
            raise AuthenticationError("not authenticated: log in first")
        token = handshake.bearer_token()
        if token is None or self._by_token is None:
            if self.allow_anonymous:
                return Principal(None)
            raise AuthenticationError(
                "no token: send 'Authorization: Bearer <jwt>', a 'bearer.<jwt>' subprotocol "
                "or a 'token' query parameter"
            )
        return await self._by_token(token)


def _too_large(message: str | bytes, limit: int) -> bool:
    if len(message) > limit:
        return True
    # A character is at most 4 UTF-8 bytes: only encode when the count alone cannot tell.
    return isinstance(message, str) and len(message) * 4 > limit and len(message.encode()) > limit


def _resume(handshake: Handshake) -> dict[str, Position] | None:
    """The positions of the ``resume`` query parameter, if any (ProtocolError if invalid)."""
    text = handshake.query.get("resume")
    return None if text is None else parse_positions(text)


def _unix(expires_at: float | None) -> int | None:
    return None if expires_at is None else int(expires_at)


def _at_least(name: str, value: int, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer of at least {minimum}, not {value!r}")
    return value
