"""The gateway: accepts a websocket, authenticates it, registers it, and pumps notifications to it.

Per connection it runs one reader (client frames, token expiry) in the task the adapter calls it
from, and a writer task only while outbound frames have to wait (see
:mod:`notifykit.connection`). Every way out — the client leaving, a bad token, a slow consumer,
the hub shutting down, cancellation, a bug — ends the same way: the connection leaves routing,
its socket is closed with the documented code (or dropped if the client does not take the
close), and then the hub's bookkeeping runs, bounded. Nothing is left behind.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from .connection import DEFAULT_QUEUE_BYTES, DEFAULT_QUEUE_SIZE, Connection
from .connlog import (
    log_closed,
    log_fields,
    log_opened,
    log_refused,
)
from .errors import (
    AuthenticationError,
    ConfigurationError,
    NotRunning,
    PropagationError,
    ProtocolError,
)
from .limits import (
    DEFAULT_FRAME_BURST,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_FRAME_RATE,
    DEFAULT_MAX_USER_CONNECTIONS,
    ConnectionSlots,
    ThrottledLog,
    at_least,
    positive_rate,
)
from .metrics import count_end
from .model import Handshake, Principal
from .session import Session
from .topics import claim_topics_policy
from .wire import (
    SUBPROTOCOL,
    CloseCode,
    Error,
    ErrorCode,
    Position,
    Welcome,
    encode,
    parse_positions,
    unix_seconds,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from anyio.abc import TaskGroup

    from .hub import Hub
    from .protocols import Authenticator, HandshakeAuthenticator, TopicPolicy, Transport
    from .recovery import Registration

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
    * ``max_connections`` — connections served at once; one more is closed with 1013.
    * ``max_user_connections`` — connections of one user served at once; one more is closed
      with 4409 (anonymous connections count towards ``max_connections`` only).
    * ``max_frame_rate`` and ``frame_burst`` — client frames per second one connection may
      send on average, and at once (a token bucket). A frame beyond them is not read: it is
      answered with a ``rate_limited`` error; a client that sends ``frame_burst`` frames beyond
      them without slowing down is closed with 4429.
    * ``close_timeout`` — seconds a close may take to flush what was queued and send its close
      frame; a client that does not read them in time has its connection dropped (aborted).
      A slow consumer still reading gets its 4008 if the kernel lets the frame it was sending
      through in time (a socket becomes writable again once about a third of its send
      buffer, up to 4 MiB on Linux, is free); one that reads nothing is dropped.
    * ``clock`` — the wall clock token expiry is measured against (Unix seconds); tests pass
      their own instead of sleeping.
    * ``monotonic`` — the clock frame rates (and the log's throttle) are measured with
      (seconds); likewise for tests.

    Violations of the limits are counted in the hub's metrics and logged, at most one line per
    kind every 10 seconds (:class:`~notifykit.limits.ThrottledLog`).

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
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_user_connections: int = DEFAULT_MAX_USER_CONNECTIONS,
        max_frame_rate: float = DEFAULT_MAX_FRAME_RATE,
        frame_burst: int = DEFAULT_FRAME_BURST,
        close_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
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
        self.verify_token: Callable[[str], Awaitable[Principal]] | None = (
            by_token if callable(by_token) else None
        )
        """The authenticator's ``authenticate(token)``, if it has one (a refresh needs it)."""
        self.max_frame_bytes = at_least("max_frame_bytes", max_frame_bytes, 1)
        self.queue_size = at_least("queue_size", queue_size, 1)
        self.queue_bytes = at_least("queue_bytes", queue_bytes, 1)
        self.max_topics = at_least("max_topics", max_topics, 0)
        self.max_bad_frames = at_least("max_bad_frames", max_bad_frames, 1)
        self.slots = ConnectionSlots(max_connections, max_user_connections)
        """The connections being served, in all and per user."""
        self.max_frame_rate = positive_rate("max_frame_rate", max_frame_rate)
        self.frame_burst = at_least("frame_burst", frame_burst, 1)
        if not isinstance(close_timeout, int | float) or not close_timeout > 0:
            raise ConfigurationError(
                f"close_timeout must be seconds above 0, not {close_timeout!r}"
            )
        self.close_timeout = float(close_timeout)
        self.clock = clock
        self.monotonic = monotonic
        self.limit_log = ThrottledLog(logger, clock=monotonic)
        """Where violations of the limits are logged, throttled."""
        self.rate_limited_frame = encode(
            Error(
                ErrorCode.RATE_LIMITED,
                f"more than {self.max_frame_rate:g} frames a second "
                f"(bursts of {self.frame_burst}): frame ignored; slow down",
            )
        )

    # --- the connection's life ------------------------------------------------------------

    async def serve(self, transport: Transport, handshake: Handshake) -> None:
        """Handle one websocket from handshake to close. Never raises for anything the client
        does; returns when the connection is over and unregistered.

        The order of the end is fixed: the connection leaves routing (no I/O), its socket is
        closed — queued frames, then the close frame, bounded by ``close_timeout``, else the
        connection is dropped — and only then does the hub's network bookkeeping run
        (unsubscribe, presence), bounded too. A close never waits on Redis.
        """
        subprotocol = SUBPROTOCOL if SUBPROTOCOL in handshake.subprotocols else None
        slots = self.slots
        if not slots.take():
            self.hub.metrics["connection_limit_refusals"] += 1
            self.limit_log.warning(
                "max_connections",
                "refused a connection from %s: this gateway serves %d connections, its maximum "
                "(max_connections)",
                handshake.client or "an unknown address",
                slots.total,
                extra={"close_code": CloseCode.TRY_AGAIN_LATER, "client": handshake.client},
            )
            await self._refuse(
                transport,
                subprotocol,
                CloseCode.TRY_AGAIN_LATER,
                "too many connections",
                handshake.client,
            )
            return
        try:
            await self._serve(transport, handshake, subprotocol)
        finally:
            slots.give_back()

    async def _serve(
        self, transport: Transport, handshake: Handshake, subprotocol: str | None
    ) -> None:
        """Check the client, then serve it (if its user has a connection left)."""
        metrics = self.hub.metrics
        if not self._origin_allowed(handshake):
            metrics["origin_refusals"] += 1
            await self._refuse(
                transport, subprotocol, CloseCode.FORBIDDEN, "origin not allowed", handshake.client
            )
            return
        try:
            principal = await self._authenticate(handshake)
        except AuthenticationError as exc:
            metrics["auth_failures"] += 1
            await self._refuse(
                transport, subprotocol, CloseCode.UNAUTHORIZED, str(exc), handshake.client
            )
            return
        try:
            resume = _resume(handshake)
        except ProtocolError as exc:
            metrics["bad_frames"] += 1
            await self._refuse(
                transport, subprotocol, CloseCode.BAD_FRAME, str(exc), handshake.client
            )
            return
        if not self.hub.running:
            await self._refuse(
                transport, subprotocol, CloseCode.TRY_AGAIN_LATER, "not running", handshake.client
            )
            return
        client = handshake.client
        del handshake  # nothing of the request stays alive as long as the connection
        user_id = principal.user_id
        if user_id is not None and not self.slots.take_user(user_id):
            metrics["user_limit_refusals"] += 1
            self.limit_log.warning(
                "max_user_connections",
                "refused a connection of user %r: it has %d, the maximum (max_user_connections)",
                user_id[:64],
                self.slots.per_user,
                extra={
                    "close_code": CloseCode.TOO_MANY_CONNECTIONS,
                    "user_id": user_id,
                    "client": client,
                },
            )
            await self._refuse(
                transport,
                subprotocol,
                CloseCode.TOO_MANY_CONNECTIONS,
                f"too many connections for this user (at most {self.slots.per_user})",
                client,
            )
            return
        connection = Connection(principal, queue_size=self.queue_size, queue_bytes=self.queue_bytes)
        try:
            await self._run(connection, transport, subprotocol, resume, client)
        finally:
            if user_id is not None:
                self.slots.give_back_user(user_id)

    async def _run(
        self,
        connection: Connection,
        transport: Transport,
        subprotocol: str | None,
        resume: dict[str, Position] | None,
        client: str | None,
    ) -> None:
        """Accept the connection, serve it until it ends, close it, and clean up after it."""
        metrics = self.hub.metrics
        await transport.accept(subprotocol)
        metrics["connections_opened"] += 1
        log_opened(connection, client)
        try:
            async with anyio.create_task_group() as writers:
                await self._converse(connection, transport, writers, resume)
                self.hub.unregister(connection)
                if connection.close_code == CloseCode.SLOW_CONSUMER:
                    metrics["slow_consumer_closes"] += 1
                    logger.warning(
                        "closing slow consumer %s of user %r",
                        connection.id,
                        connection.user_id,
                        extra=log_fields(connection),
                    )
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
            count_end(metrics, connection)
            log_closed(connection)

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
                    unix_seconds(principal.expires_at),
                    registration.positions,
                    registration.recovered,
                )
            )

        try:
            # close() cancels this scope; its deadline is the token's expiry, which a refresh
            # moves.
            with anyio.CancelScope(deadline=self.deadline(connection.principal)) as scope:
                connection.bind(scope)
                # The welcome is queued once registered, before what was missed: it is always
                # the first frame, and it promises that later notifications will arrive.
                await self.hub.attach(connection, resume=resume, greeting=welcome)
                connection.start_sending(transport, writers)
                await Session(self, connection, scope).run(transport)
            if connection.close_code is None and anyio.current_time() >= scope.deadline:
                connection.close(CloseCode.UNAUTHORIZED, "token expired")
        except (PropagationError, NotRunning) as exc:
            logger.warning(
                "could not register connection %s of user %r: %s",
                connection.id,
                connection.user_id,
                exc,
                extra=log_fields(connection),
            )
            connection.release()  # drop the queued welcome: it must not be sent
            connection.close(CloseCode.TRY_AGAIN_LATER, "cannot register now; retry later")
        except Exception:
            logger.exception(
                "connection %s of user %r failed",
                connection.id,
                connection.user_id,
                extra=log_fields(connection),
            )
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
            "connection %s of user %r did not take its close frame (%d) within %g s: dropped",
            connection.id,
            connection.user_id,
            code,
            self.close_timeout,
            extra=log_fields(connection, close_code=code),
        )

    async def _refuse(
        self,
        transport: Transport,
        subprotocol: str | None,
        code: int,
        reason: str,
        client: str | None,
    ) -> None:
        log_refused(code, reason, client)
        # Accept only to close at once: browsers cannot read why a handshake was refused, but
        # they can read a close code and reason.
        await transport.accept(subprotocol)
        with anyio.move_on_after(self.close_timeout) as bounded:
            await transport.close(code, reason)
        if bounded.cancelled_caught:
            transport.abort()

    # --- checks ---------------------------------------------------------------------------

    def _origin_allowed(self, handshake: Handshake) -> bool:
        origin = handshake.headers.get("origin")
        if not self.allowed_origins or origin is None:
            return True
        return origin.rstrip("/").lower() in self.allowed_origins

    def deadline(self, principal: Principal) -> float:
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
        if token is None or self.verify_token is None:
            if self.allow_anonymous:
                return Principal(None)
            raise AuthenticationError(
                "no token: send 'Authorization: Bearer <jwt>', a 'bearer.<jwt>' subprotocol "
                "or a 'token' query parameter"
            )
        return await self.verify_token(token)


def _resume(handshake: Handshake) -> dict[str, Position] | None:
    """The positions of the ``resume`` query parameter, if any (ProtocolError if invalid)."""
    text = handshake.query.get("resume")
    return None if text is None else parse_positions(text)
