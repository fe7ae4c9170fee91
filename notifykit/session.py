"""A registered connection's conversation: the client's frames in, the replies out.

:class:`Session` reads every frame a client sends after its ``welcome`` — within the inbound
rate (a token bucket), the frame size and the bad-frame allowance the gateway sets — and
answers ``ping``, ``subscribe``, ``unsubscribe`` and ``refresh``. The gateway runs one per
connection, in the task it serves the connection from; the token's expiry is the deadline of
the cancel scope it reads under, which a refresh moves.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from .connlog import log_fields, log_refresh_refused, log_refreshed
from .errors import AuthenticationError, InvalidNotification, PropagationError, ProtocolError
from .model import topic_key, validate_topic
from .wire import (
    CloseCode,
    Error,
    ErrorCode,
    Ping,
    Pong,
    Refresh,
    Refreshed,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    encode,
    parse_client,
    unix_seconds,
)

if TYPE_CHECKING:
    from .connection import Connection
    from .gateway import Gateway
    from .model import Principal
    from .protocols import Transport
    from .recovery import Registration
    from .wire import ClientFrame, Position

__all__ = ["Session"]

logger = logging.getLogger("notifykit.gateway")


class Session:
    """The conversation of one registered ``connection`` served by ``gateway``; ``expiry`` is
    the cancel scope it reads under (its deadline is the token's expiry)."""

    __slots__ = ("connection", "expiry", "gateway")

    def __init__(self, gateway: Gateway, connection: Connection, expiry: anyio.CancelScope) -> None:
        self.gateway = gateway
        self.connection = connection
        self.expiry = expiry

    async def run(self, transport: Transport) -> None:
        """Read and answer the client's frames until it leaves (or is closed)."""
        gateway, connection, metrics = self.gateway, self.connection, self.gateway.hub.metrics
        bad_frames = 0
        # The token bucket of the inbound rate: `burst` frames may come at once, and one more
        # every 1/rate seconds. A frame beyond it is owed (tokens go below 0), not read, and
        # answered rate_limited; one more once `burst` are owed closes the connection. Local
        # floats: a few operations per frame.
        rate, burst, now = gateway.max_frame_rate, float(gateway.frame_burst), gateway.monotonic
        tokens, last = burst, now()
        while True:
            message = await transport.receive()
            if message is None:
                return
            arrived = now()
            tokens = min(burst, tokens + (arrived - last) * rate) - 1.0
            last = arrived
            if tokens < 0.0:
                if tokens < -burst:
                    self._close_rate_limited()
                    return
                metrics["rate_limited_frames"] += 1
                connection.offer(gateway.rate_limited_frame)
                await anyio.lowlevel.checkpoint()
                continue
            try:
                if _too_large(message, gateway.max_frame_bytes):
                    raise ProtocolError(
                        f"frame larger than {gateway.max_frame_bytes} bytes",
                        code=ErrorCode.FRAME_TOO_LARGE,
                    )
                frame = parse_client(message)
            except ProtocolError as exc:
                metrics["bad_frames"] += 1
                bad_frames += 1
                if bad_frames >= gateway.max_bad_frames:
                    connection.close(CloseCode.BAD_FRAME, "too many invalid frames")
                    return
                connection.offer(encode(Error(exc.code, str(exc), exc.ref)))
                await anyio.lowlevel.checkpoint()
                continue
            bad_frames = 0
            await self._handle(frame)
            # A client that sends faster than it reads must not starve the connection's writer
            # (a server's receive returns at once while frames are buffered).
            await anyio.lowlevel.checkpoint()

    def _close_rate_limited(self) -> None:
        gateway, connection = self.gateway, self.connection
        metrics = gateway.hub.metrics
        metrics["rate_limited_frames"] += 1
        metrics["rate_limit_closes"] += 1
        gateway.limit_log.warning(
            "rate_limit",
            "closed connection %s of user %r with 4429: it kept sending more than %g frames a "
            "second (max_frame_rate) after %d rate_limited errors (frame_burst)",
            connection.id,
            connection.user_id,
            gateway.max_frame_rate,
            gateway.frame_burst,
            extra=log_fields(connection, close_code=CloseCode.RATE_LIMITED),
        )
        connection.close(CloseCode.RATE_LIMITED, "too many frames; slow down")

    # --- client requests ------------------------------------------------------------------

    async def _handle(self, frame: ClientFrame) -> None:
        connection, hub = self.connection, self.gateway.hub
        match frame:
            case Ping(ref):
                connection.offer(encode(Pong(ref)))
            case Subscribe(topic, ref, since):
                refusal = await self._subscribe(topic, ref, since)
                if refusal is not None:
                    connection.offer(encode(refusal))
            case Unsubscribe(topic, ref):
                if topic in connection.topics:
                    await hub.unsubscribe(connection, topic)
                connection.offer(encode(Unsubscribed(topic, ref)))
            case Refresh(token, ref):
                connection.offer(encode(await self._refresh(token, ref)))

    async def _subscribe(self, topic: str, ref: str | None, since: Position | None) -> Error | None:
        """Subscribe, offering ``subscribed`` and what was missed since ``since``; or return
        why not."""
        connection, most = self.connection, self.gateway.max_topics
        try:
            validate_topic(topic)
        except InvalidNotification as exc:
            return Error(ErrorCode.INVALID_TOPIC, str(exc), ref)
        if topic not in connection.topics:
            if len(connection.topics) >= most:
                return Error(ErrorCode.FORBIDDEN, f"at most {most} topics", ref)
            if not await self._may_subscribe(connection.principal, topic):
                return Error(ErrorCode.FORBIDDEN, f"not allowed to subscribe to {topic!r}", ref)

        def subscribed(registration: Registration) -> str:
            position = registration.positions.get(topic_key(topic))
            return encode(Subscribed(topic, ref, position, registration.recovered))

        try:
            await self.gateway.hub.subscribe(connection, topic, since=since, greeting=subscribed)
        except PropagationError:  # the hub left the connection as it was
            return Error(ErrorCode.UNAVAILABLE, "subscription failed; retry later", ref)
        return None

    async def _may_subscribe(self, principal: Principal, topic: str) -> bool:
        if principal.is_anonymous:
            return False
        try:
            verdict = self.gateway.topic_policy(principal, topic)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except Exception:
            logger.exception("topic policy failed for %r; refusing", topic)
            return False
        return verdict is True

    async def _refresh(self, token: str, ref: str | None) -> Refreshed | Error:
        gateway, connection = self.gateway, self.connection
        if connection.principal.is_anonymous:
            return Error(ErrorCode.FORBIDDEN, "anonymous connections cannot refresh", ref)
        verify = gateway.verify_token
        if verify is None:
            return Error(ErrorCode.FORBIDDEN, "this server does not accept tokens", ref)
        try:
            principal = await verify(token)
        except AuthenticationError as exc:
            log_refresh_refused(connection, str(exc))
            return Error(ErrorCode.FORBIDDEN, f"refresh refused: {exc}", ref)
        if principal.user_id != connection.principal.user_id:
            log_refresh_refused(connection, "the token is for another user")
            return Error(ErrorCode.FORBIDDEN, "refresh token is for another user", ref)
        connection.principal = principal
        self.expiry.deadline = gateway.deadline(principal)
        log_refreshed(connection)
        # The new token decides from now on: leave the topics it no longer allows, each
        # announced with an unsubscribed frame (no ref: the server initiated it).
        for topic in sorted(connection.topics):
            if not await self._may_subscribe(principal, topic):
                await gateway.hub.unsubscribe(connection, topic)
                connection.offer(encode(Unsubscribed(topic)))
        return Refreshed(unix_seconds(principal.expires_at), ref)


def _too_large(message: str | bytes, limit: int) -> bool:
    if len(message) > limit:
        return True
    # A character is at most 4 UTF-8 bytes: only encode when the count alone cannot tell.
    return isinstance(message, str) and len(message) * 4 > limit and len(message.encode()) > limit
