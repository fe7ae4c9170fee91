"""The ``websockets`` adapter: notifykit on a plain ``websockets`` server, no ASGI stack.

One call serves a hub (it enters the hub if it is not running, and closes it on the way out)::

    from notifykit import Hub, JWTAuthenticator
    from notifykit.adapters.websockets import serve

    async with serve(Hub(), JWTAuthenticator(secret=SECRET), host="0.0.0.0", port=8000) as server:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, server.close)
        await server.serve_forever()      # until server.close() or cancellation

Clients connect to ``ws://host:8000/ws``; ``GET /healthz`` answers with the instance's status.
Or mount the handler on a ``websockets`` server of your own::

    handler = NotifyHandler(Gateway(hub, authenticator))
    async with websockets.asyncio.server.serve(handler, host, port, **handler.server_options()):
        ...

The transport is the sans-I/O split ``websockets`` itself uses for
:func:`websockets.asyncio.server.broadcast`: :meth:`WebsocketsTransport.send_now` writes the
frame to the socket at once, unless the socket's write buffer is above its high-water mark
(``write_limit``) — then it says False and the connection's writer task awaits ``websockets``'
own ``send``, which waits for the buffer to drain. A server's text frame is the same bytes for
every client when no extension (compression) was negotiated, so the handler encodes each
notification to its websocket frame once (:class:`FrameCache`) and every connection it is
delivered to writes those bytes; a connection with an extension goes through its protocol's
``send_text`` instead.

Needs the ``websockets`` extra (``pip install 'notifykit[websockets]'``); asyncio only, like
``websockets``' asyncio server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as websockets_serve
from websockets.exceptions import ConnectionClosed, InvalidHeader
from websockets.headers import parse_subprotocol
from websockets.protocol import State

from ..errors import TransportClosed
from ..gateway import Gateway
from ..model import Handshake
from ..wire import SUBPROTOCOL, CloseCode
from ._framing import FrameCache

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Sequence

    from websockets.asyncio.server import Server
    from websockets.http11 import Request, Response
    from websockets.typing import Subprotocol

    from ..hub import Hub
    from ..protocols import Authenticator, HandshakeAuthenticator, TopicPolicy

__all__ = [
    "NotifyHandler",
    "NotifyServer",
    "WebsocketsTransport",
    "handshake_from_connection",
    "select_subprotocol",
    "serve",
]

MAX_SIZE_FACTOR = 4
"""``websockets`` drops (1009) client messages over this many times the gateway's
``max_frame_bytes``; the gateway answers smaller ones that are still too large with a
``frame_too_large`` error frame and keeps the connection."""


def select_subprotocol(
    connection: ServerConnection, subprotocols: Sequence[Subprotocol]
) -> Subprotocol | None:
    """Select ``notifykit.v1`` if the client offers it, else no subprotocol (never a
    ``bearer.<jwt>`` entry): pass it as ``serve(..., select_subprotocol=...)``."""
    for offered in subprotocols:
        if offered == SUBPROTOCOL:
            return offered
    return None


def handshake_from_connection(connection: ServerConnection) -> Handshake:
    """Build a :class:`~notifykit.model.Handshake` from an opened ``websockets`` connection;
    its ``request`` is the connection itself."""
    request = connection.request
    if request is None:  # pragma: no cover - the handler only runs after the handshake
        raise TransportClosed("the opening handshake did not complete")
    headers = {name.lower(): value for name, value in request.headers.raw_items()}
    offered: list[str] = []
    for value in request.headers.get_all("Sec-WebSocket-Protocol"):
        with contextlib.suppress(InvalidHeader):  # websockets refused those already
            offered.extend(parse_subprotocol(value))
    remote = connection.remote_address
    return Handshake(
        headers=headers,
        query=dict(parse_qsl(urlsplit(request.path).query)),
        subprotocols=tuple(offered),
        client=f"{remote[0]}:{remote[1]}" if isinstance(remote, tuple) else None,
        request=connection,
    )


class WebsocketsTransport:
    """:class:`~notifykit.protocols.Transport` over a ``websockets`` asyncio
    ``ServerConnection`` (see the module docstring for how sending works). Transports of one
    server share its ``encoder``."""

    __slots__ = ("_encoder", "_ws")

    def __init__(self, connection: ServerConnection, encoder: FrameCache | None = None) -> None:
        self._ws = connection
        self._encoder = encoder if encoder is not None else FrameCache()

    async def accept(self, subprotocol: str | None) -> None:
        """Nothing to do: ``websockets`` completed the handshake (and selected the
        subprotocol with :func:`select_subprotocol`) before calling the handler."""

    async def receive(self) -> str | bytes | None:
        """The next message, or None once the connection is closed (by either side, or by
        ``websockets`` itself: 1009 for a message over ``max_size``)."""
        try:
            return await self._ws.recv()
        except ConnectionClosed:
            return None

    def send_now(self, frame: str) -> bool:
        """Write one text frame to the socket if its write buffer is below the high-water mark;
        False (and nothing written) if ``websockets`` would have to wait for it to drain."""
        ws = self._ws
        protocol = ws.protocol
        if protocol.state is not State.OPEN:
            raise TransportClosed("the websocket is closing")
        if ws.paused or ws.send_in_progress is not None:
            return False
        if protocol.extensions:  # e.g. compression: the frame is this connection's own
            protocol.send_text(frame.encode())
            ws.send_data()
        else:  # what send_text + send_data would write, encoded once for every connection
            ws.transport.write(self._encoder.frame(frame))
        return True

    async def send(self, frame: str) -> None:
        """Send one text frame with ``websockets``' ``send``, which waits while the write
        buffer is above its high-water mark."""
        try:
            await self._ws.send(frame)
        except ConnectionClosed as exc:
            raise TransportClosed(str(exc)) from None

    async def close(self, code: int, reason: str) -> None:
        """Send the close frame after what was written, and wait (``websockets``' own
        ``close_timeout`` at most) for the client to answer it. Never raises."""
        with contextlib.suppress(ConnectionClosed, OSError):
            await self._ws.close(code, reason)

    def abort(self) -> None:
        """Drop the TCP connection at once, and whatever is buffered for it."""
        with contextlib.suppress(Exception):
            self._ws.transport.abort()


class NotifyHandler:
    """The connection handler for ``websockets.asyncio.server.serve``: serves every
    websocket it is given through ``gateway``.

    Pass :meth:`server_options` to ``serve`` too: they select the ``notifykit.v1``
    subprotocol, answer ``GET /healthz``, refuse other paths than ``path`` and set the
    message size limit.
    """

    __slots__ = ("_encoder", "gateway", "path")

    def __init__(self, gateway: Gateway, *, path: str | None = "/ws") -> None:
        self.gateway = gateway
        self.path = path
        self._encoder = FrameCache()

    async def __call__(self, connection: ServerConnection) -> None:
        """Serve one connection, from welcome to close."""
        await self.gateway.serve(
            WebsocketsTransport(connection, self._encoder), handshake_from_connection(connection)
        )

    def server_options(self) -> dict[str, Any]:
        """Keyword arguments for ``websockets.asyncio.server.serve``: subprotocol selection,
        :meth:`process_request`, ``max_size`` (``MAX_SIZE_FACTOR`` times the gateway's
        ``max_frame_bytes``) and no compression (notifications are small, and
        permessage-deflate costs tens of KiB per connection)."""
        return {
            "select_subprotocol": select_subprotocol,
            "process_request": self.process_request,
            "max_size": self.gateway.max_frame_bytes * MAX_SIZE_FACTOR,
            "compression": None,
        }

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer ``GET /healthz`` (200 with ``{"status", "connections", "users"}``, 503
        while degraded) and refuse websockets on any path but ``path`` (404)."""
        path = urlsplit(request.path).path
        if path == "/healthz":
            hub = self.gateway.hub
            body = {
                "status": "ok" if hub.healthy else "degraded",
                "connections": hub.state.connection_count,
                "users": hub.state.user_count,
            }
            status = HTTPStatus.OK if hub.healthy else HTTPStatus.SERVICE_UNAVAILABLE
            response = connection.respond(status, json.dumps(body))
            del response.headers["Content-Type"]  # websockets' Headers is a multi-dict
            response.headers["Content-Type"] = "application/json"
            return response
        if self.path is not None and path != self.path:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        return None


class NotifyServer:
    """What :func:`serve` yields: the running ``websockets`` server and its gateway."""

    def __init__(self, server: Server, gateway: Gateway) -> None:
        self.server = server
        """The ``websockets`` server (``server.sockets`` lists the bound sockets)."""
        self.gateway = gateway
        self._stop = asyncio.Event()

    @property
    def port(self) -> int:
        """The TCP port of the first bound socket (useful with ``port=0``)."""
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    def close(self) -> None:
        """Stop accepting connections and make :meth:`serve_forever` return (safe to call
        from a signal handler); :func:`serve` closes the open ones as its block exits."""
        self.server.server.close()
        self._stop.set()

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` is called (or the calling task is cancelled)."""
        await self._stop.wait()


@contextlib.asynccontextmanager
async def serve(
    hub: Hub,
    authenticator: Authenticator | HandshakeAuthenticator,
    *,
    host: str | None = "127.0.0.1",
    port: int = 8000,
    path: str | None = "/ws",
    allowed_origins: Iterable[str] = (),
    allow_anonymous: bool = False,
    topic_policy: TopicPolicy | None = None,
    websockets_options: dict[str, Any] | None = None,
    **gateway_options: Any,
) -> AsyncIterator[NotifyServer]:
    """Serve ``hub`` on a ``websockets`` server at ``ws://host:port/ws`` while the block runs.

    Enters the hub if it is not running yet (and then closes it on the way out). On exit the
    server stops accepting, every connection is closed with ``1001 server shutting down``
    after what was queued for it, and the server stops. The other keyword arguments
    configure the :class:`~notifykit.gateway.Gateway` (``queue_size``, ``max_frame_bytes``,
    ``close_timeout``...); ``websockets_options`` go to ``websockets.asyncio.server.serve``
    (``ssl``, ``ping_interval``, ``write_limit``...) over :meth:`NotifyHandler.server_options`.
    """
    gateway = Gateway(
        hub,
        authenticator,
        allowed_origins=allowed_origins,
        allow_anonymous=allow_anonymous,
        topic_policy=topic_policy,
        **gateway_options,
    )
    handler = NotifyHandler(gateway, path=path)
    options = handler.server_options() | (websockets_options or {})
    owned = not hub.running
    if owned:
        await hub.__aenter__()
    try:
        server = await websockets_serve(handler, host, port, **options)
    except BaseException:
        if owned:
            await hub.aclose()
        raise
    notify_server = NotifyServer(server, gateway)
    try:
        yield notify_server
    finally:
        notify_server.close()
        try:
            if owned:
                await hub.aclose()  # 1001 through the gateway, after what was queued
        finally:
            # Connections of a hub we do not own, and any the hub did not close in time.
            server.close(code=CloseCode.GOING_AWAY, reason="server shutting down")
            await server.wait_closed()
