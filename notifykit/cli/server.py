"""``notifykit serve`` under uvicorn: the server, its shutdown sequence and its guards.

Imported only by ``serve`` (uvicorn is the optional ``server`` extra). Everything here that
reaches into uvicorn beyond its public ``Config``/``Server`` API is marked "uvicorn internals",
and kept in this one module.

**Shutdown sequence** (:meth:`NotifyServer.shutdown`, on SIGTERM or SIGINT), in this order:

1. stop accepting: close the listening sockets;
2. close every websocket with ``1001`` through the hub (:meth:`~notifykit.hub.Hub.aclose`),
   which waits up to ``--shutdown-timeout`` for the clients to leave, then stops the hub (its
   propagator and presence);
3. wait up to ``--close-timeout`` for the connection handlers to write their last frames and
   close frames (each is itself bounded by ``--close-timeout``);
4. drop (abort) every websocket still open: a client that stopped reading cannot block the
   exit;
5. uvicorn's own shutdown: idle HTTP connections close, requests in flight get up to
   ``--close-timeout`` (rounded up to whole seconds) to finish, then the application's lifespan
   ends.

So a shutdown takes at most ``--shutdown-timeout`` + ``--close-timeout`` + ``--close-timeout``
rounded up (+ 0.1 s that uvicorn sleeps), whatever the clients do.

**Guards** in front of uvicorn's protocols (:class:`GuardedHttpProtocol`,
:class:`GuardedWebSocketProtocol`): a request head over :data:`MAX_HEAD_BYTES` gets ``431``, one
not complete within ``--header-timeout`` seconds gets ``408``, and the websocket handshake's own
refusals (a header line over :data:`MAX_LINE_BYTES`, more than 128 headers) are written and the
socket closed — uvicorn's ``websockets-sansio`` implementation logs them but never sends them
nor closes the socket. See "Choice of websocket implementation" in ``docs/cli.md``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from typing import TYPE_CHECKING, Any

import uvicorn

from .logs import logging_config

if TYPE_CHECKING:
    from ..hub import Hub
    from .settings import Settings

__all__ = [
    "MAX_HEAD_BYTES",
    "MAX_LINE_BYTES",
    "WS_SIZE_FACTOR",
    "GuardedHttpProtocol",
    "GuardedWebSocketProtocol",
    "NotifyServer",
    "run_server",
]

WS_SIZE_FACTOR = 4
"""The websocket layer drops (1009) frames over this many times ``--max-frame-bytes``; frames
between the two limits get a ``frame_too_large`` error frame and the connection stays."""
MAX_HEAD_BYTES = 64 * 1024
"""Largest HTTP request head (request line and headers) accepted; ``431`` beyond."""
MAX_LINE_BYTES = 16 * 1024
"""Longest request line or header line of a websocket handshake; ``431`` (``414`` for the
request line) beyond. Above the 8,192-character token limit plus its header name, so that a
token that is too long gets the documented ``4001`` refusal, not an HTTP error."""

# websockets reads its handshake limits from the environment when it is first imported (its
# documented way to configure them); nothing has imported it yet when `serve` starts.
os.environ.setdefault("WEBSOCKETS_MAX_LINE_LENGTH", str(MAX_LINE_BYTES))

# uvicorn internals: the protocol classes below are uvicorn's own, subclassed; `Config` takes
# protocol classes as its public `http=`/`ws=` arguments.
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: E402
from uvicorn.protocols.websockets.websockets_sansio_impl import (  # noqa: E402
    WebSocketsSansIOProtocol,
)

logger = logging.getLogger("notifykit.serve")


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on the size and the time of a request head
    (httptools itself has neither): ``head_timeout`` seconds from the connection or the first
    byte of a request to the end of its head, so that a "slowloris" holds nothing for long.
    uvicorn internals: the parser callbacks ``on_message_begin``/``on_headers_complete`` and
    ``transport``."""

    head_timeout: float = 10.0

    @classmethod
    def with_timeout(cls, head_timeout: float) -> type[GuardedHttpProtocol]:
        """This protocol with another ``head_timeout`` (uvicorn creates protocols from a
        class, with no room for options of ours)."""
        return type(cls.__name__, (cls,), {"head_timeout": head_timeout})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes: int | None = 0  # None once the head is complete
        self._tail = b""  # the last bytes of the head seen so far
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_bytes is not None:
            # Count only the head: it ends at the first blank line, which may straddle two
            # chunks (hence the 3 bytes kept from the last one); the body after it does not
            # count.
            window = self._tail + data
            end = window.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._tail))
            self._tail = window[-3:]
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(b"431 Request Header Fields Too Large")
                return
        super().data_received(data)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes, self._tail = 0, b""  # what follows is the next request's head

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._disarm()
        super().on_headers_complete()

    def handle_websocket_upgrade(self) -> None:
        """Hand the socket to the websocket protocol, then drop the parser: it holds this
        protocol's bound methods, a cycle that uvicorn breaks in ``connection_lost``, which an
        upgraded protocol never gets. Left to the cyclic collector, each connection's HTTP
        side (parser, protocol, flow control, transport) outlived it until a collection."""
        super().handle_websocket_upgrade()
        self.parser = None  # type: ignore[assignment]

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = asyncio.get_running_loop().call_later(
                self.head_timeout, self._head_timed_out
            )

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head_bytes is not None:
            self._refuse(b"408 Request Timeout")

    def _refuse(self, status: bytes) -> None:
        self._disarm()
        self._head_bytes = None
        if not self.transport.is_closing():
            self.transport.write(
                b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            self.transport.close()


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol, but a handshake that websockets refuses
    (``431``/``414``; or a malformed request, answered by closing) is written and the socket
    closed; and the refusal's exception forgets its traceback, whose frames hold this protocol
    (through ``conn.handshake_exc``: a cycle that left every refused handshake to the cyclic
    collector). uvicorn internals: ``conn`` (websockets' ``ServerProtocol``, whose
    ``handshake_exc`` and ``data_to_send()`` are public), ``handshake_initiated``,
    ``transport``."""

    _lingering = False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.handshake_exc is not None:
            _forget_tracebacks(self.conn.handshake_exc)
        if (
            self.conn.handshake_exc is not None
            and not self.handshake_initiated
            and not self.transport.is_closing()
        ):
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()

    def handle_parser_exception(self) -> None:
        """A frame websockets refuses (``1009`` beyond the size limit, ``1002`` for a protocol
        error). uvicorn writes the close frame and closes the socket at once, while the rest of
        the refused frame is still arriving: the kernel answers those bytes with a reset, which
        destroys the close frame before the client reads it (half the 4 MB frames lost it).
        Here the close frame is written, then the end of the stream (FIN), and what still
        arrives is read and discarded until the client closes — for at most uvicorn's
        ``close_timeout``, the time it gives a client to answer a close. uvicorn internals:
        ``conn``, ``queue``, ``close_sent``, ``close_timer``, ``close_timeout``, ``loop``."""
        if self._lingering:  # called again for each chunk that arrives meanwhile
            return
        self._lingering = True
        sent = self.conn.close_sent
        code, reason = (sent.code, sent.reason) if sent is not None else (1006, "")
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if self.close_timer is None:
            self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)


class NotifyServer(uvicorn.Server):
    """uvicorn's server with notifykit's shutdown sequence (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, hub: Hub, *, close_timeout: float) -> None:
        super().__init__(config)
        self.hub = hub
        self.close_timeout = close_timeout

    async def shutdown(self, sockets: Any = None) -> None:
        """Stop accepting, 1001 to every websocket, stop the hub, drop what is left, then
        uvicorn's own shutdown (HTTP connections, lifespan)."""
        for listener in self.servers:  # 1. accept no new connection
            listener.close()
        await self.hub.aclose()  # 2. 1001 to each websocket, bounded by --shutdown-timeout
        handlers = set(self.server_state.tasks)  # uvicorn internals: the per-connection tasks
        if handlers:  # 3. their last frames and close frames (uvicorn runs on asyncio)
            await asyncio.wait(handlers, timeout=self.close_timeout)
        for connection in list(self.server_state.connections):  # uvicorn internals
            if isinstance(connection, GuardedWebSocketProtocol):
                connection.transport.abort()  # 4. a client that stopped reading
        await super().shutdown(sockets)  # 5. HTTP connections, then the lifespan


def run_server(app: Any, hub: Hub, settings: Settings, description: str) -> int:
    """Run ``app`` under uvicorn until SIGINT/SIGTERM; 0 after a clean stop, 3 if it could
    not start (port in use, startup failed)."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=GuardedHttpProtocol.with_timeout(settings.header_timeout),
        ws=GuardedWebSocketProtocol,
        ws_max_size=settings.max_frame_bytes * WS_SIZE_FACTOR,
        lifespan="on",
        log_config=logging_config(settings.log_level, settings.log_format),
        log_level=settings.log_level,
        timeout_graceful_shutdown=math.ceil(settings.close_timeout),  # uvicorn takes an int
    )
    server = NotifyServer(config, hub, close_timeout=settings.close_timeout)
    logger.info(description)
    server.run()
    return 0 if server.started else 3


def _forget_tracebacks(exc: BaseException) -> None:
    """Drop the tracebacks of ``exc`` and of the exceptions it was raised from or during."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__
