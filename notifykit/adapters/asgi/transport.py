"""The ASGI websocket transport: a plain ASGI handler (no framework class on the hot path).

Measured with the same design, Starlette's ``WebSocket`` class costs ~1.2x the server CPU per
message of a plain ASGI handler; this module speaks the ASGI websocket messages directly and
still mounts anywhere an ASGI app can (Starlette, FastAPI, any ASGI server).

ASGI offers only an awaitable ``send``, so :meth:`ASGITransport.send_now` — hand a frame over
without waiting — is built on how ASGI servers behave:

* On asyncio (uvicorn, hypercorn, daphne), ``send_now`` runs the server's ``send`` coroutine
  right away. When the server does not have to wait (its socket keeps up), that is the whole
  send, with no task switch. When it has to wait (the client reads slowly), the coroutine has
  started and must be finished: the transport finishes it in an asyncio task of its own and
  reports the transport busy until it is done (``send_now`` then says False, and
  :meth:`ASGITransport.send` waits for it first), so frames stay in order. asyncio lets any
  task finish a coroutine; this module is the one place notifykit relies on that, and only on
  asyncio.
* On any other backend (an ASGI server on trio), ``send_now`` says False and the connection's
  writer task awaits ``send``: correct everywhere, one task switch per burst.

Under uvicorn's ``websockets-sansio`` implementation (what ``notifykit serve`` runs), the
transport skips the ASGI message altogether: ``send_now`` writes the frame's bytes to the
socket itself, as uvicorn's own ``send`` would, encoded once for every connection a
notification goes to (:mod:`notifykit.adapters._framing`). This reads uvicorn's protocol object
(its ``conn``, ``transport`` and ``writable``): uvicorn internals, checked by type, used only
when ``send`` is that protocol's own method.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from contextlib import suppress
from types import CoroutineType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from ...errors import TransportClosed
from ...model import Handshake
from .._framing import FrameCache

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Generator, MutableMapping

    from ...gateway import Gateway

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]

__all__ = ["ASGITransport", "WebSocketEndpoint", "handshake_from_scope"]


def handshake_from_scope(scope: Scope) -> Handshake:
    """Build a :class:`~notifykit.model.Handshake` from an ASGI websocket scope (which becomes
    its ``request``: a session or user a middleware put there is there for the authenticator)."""
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", ())
    }
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    client = scope.get("client")
    return Handshake(
        headers=headers,
        query=query,
        subprotocols=tuple(scope.get("subprotocols", ())),
        client=f"{client[0]}:{client[1]}" if client else None,
        request=scope,
    )


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _Resume:
    """A coroutine that ran its first step elsewhere and yielded ``yielded`` to the event loop:
    awaiting this finishes it, passing the loop's answers (and exceptions) through."""

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, None], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, None]:
        coro, value = self._coro, self._yielded
        while True:
            try:
                sent = yield value
            except BaseException as exc:
                try:
                    value = coro.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                value = coro.send(sent)
            except StopIteration:
                return


def _reset_on_close(sock: Any) -> None:
    """Make closing ``sock`` reset the connection (linger 0): without it the kernel keeps the
    unsent bytes and retries a peer that reads nothing for minutes after the close."""
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _finish(coro: Coroutine[Any, Any, None], yielded: Any) -> None:
    await _Resume(coro, yielded)


async def _awaiting(awaitable: Awaitable[None]) -> None:
    await awaitable


def _uvicorn_protocol(send: Send) -> Any:
    """uvicorn's ``websockets-sansio`` protocol object if ``send`` is its own ``send`` method
    (not wrapped by middleware), else None."""
    owner = getattr(send, "__self__", None)
    if owner is None:
        return None
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol,
        )
    except ImportError:
        return None
    if isinstance(owner, WebSocketsSansIOProtocol) and (
        getattr(send, "__func__", None) is WebSocketsSansIOProtocol.send
    ):
        return owner
    return None


class ASGITransport:
    """:class:`~notifykit.protocols.Transport` over ASGI ``receive``/``send``. Transports of one
    endpoint share its ``frames`` cache (see the module docstring)."""

    __slots__ = ("_closed", "_eager", "_failed", "_frames", "_pending", "_receive", "_send", "_uv")

    def __init__(self, receive: Receive, send: Send, frames: FrameCache | None = None) -> None:
        self._receive = receive
        self._send = send
        self._closed = False
        self._eager = _on_asyncio()
        self._pending: asyncio.Task[None] | None = None  # a send finishing in its own task
        self._failed: BaseException | None = None  # how that send ended, if it failed
        self._uv = _uvicorn_protocol(send) if self._eager else None
        self._frames = frames if frames is not None else FrameCache()

    async def accept(self, subprotocol: str | None) -> None:
        """Send ``websocket.accept``."""
        await self._send({"type": "websocket.accept", "subprotocol": subprotocol})

    async def receive(self) -> str | bytes | None:
        """The next text or bytes message, or None after ``websocket.disconnect``."""
        while not self._closed:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                return text if text is not None else (message.get("bytes") or b"")
            if kind == "websocket.disconnect":
                self._closed = True
        return None

    def send_now(self, frame: str) -> bool:
        """Hand one text frame to the server if that needs no waiting (see the module
        docstring); raises the server's ``OSError`` (uvicorn's ``ClientDisconnected``) if the
        client is gone."""
        uv = self._uv
        if uv is not None:  # uvicorn's websockets-sansio: write the frame's bytes ourselves
            if uv.close_sent or uv.disconnected or uv.transport.is_closing():
                raise TransportClosed("the websocket is closed")
            if self._pending is not None or not uv.writable.is_set():
                return False  # uvicorn would wait for the socket to drain
            if uv.conn.extensions:  # e.g. compression: this connection's own frame
                uv.conn.send_text(frame.encode())
                uv.transport.write(b"".join(uv.conn.data_to_send()))
            else:
                uv.transport.write(self._frames.frame(frame))
            return True
        if not self._eager or self._pending is not None:
            return False
        if self._failed is not None:
            raise self._failed
        sending = self._send({"type": "websocket.send", "text": frame})
        # A coroutine is driven directly; any other awaitable through a coroutine.
        coro = sending if type(sending) is CoroutineType else _awaiting(sending)
        try:
            yielded = coro.send(None)
        except StopIteration:
            return True  # sent
        # The server must wait for its socket: finish this send in a task of our own.
        pending = asyncio.get_running_loop().create_task(_finish(coro, yielded))
        pending.add_done_callback(self._finished)
        self._pending = pending
        return True

    def _finished(self, task: asyncio.Task[None]) -> None:
        if self._pending is task:
            self._pending = None
        if task.cancelled():  # its frame may be cut short: nothing may follow it
            self._failed = TransportClosed("a send was cancelled midway")
        elif (error := task.exception()) is not None:
            self._failed = error

    async def _settle(self) -> None:
        """Wait for a send still finishing in its own task; raise how it failed, if it did."""
        if (pending := self._pending) is not None:
            if not pending.done():
                await asyncio.wait((pending,))  # raises only if *this* task is cancelled
            self._finished(pending)
        if self._failed is not None:
            raise self._failed

    async def send(self, frame: str) -> None:
        """Send one text frame, after any send still in progress; waits as the server does."""
        await self._settle()
        await self._send({"type": "websocket.send", "text": frame})

    async def close(self, code: int, reason: str) -> None:
        """Send ``websocket.close`` after what was handed over; a no-op once the client is
        gone."""
        if self._closed:
            return
        self._closed = True
        with suppress(OSError, RuntimeError):
            await self._settle()
            await self._send({"type": "websocket.close", "code": code, "reason": reason})

    def abort(self) -> None:
        """Drop the TCP connection: under a server whose ``send`` belongs to a protocol with an
        asyncio ``transport`` (uvicorn, as ``notifykit serve`` runs it), that transport is
        aborted; elsewhere (a ``send`` wrapped by middleware) the server closes it when the
        handler returns."""
        self._closed = True
        if self._pending is not None:
            self._pending.cancel()
        # asyncio's and uvloop's transports alike (uvloop's are no asyncio.BaseTransport).
        transport = getattr(getattr(self._send, "__self__", None), "transport", None)
        abort = getattr(transport, "abort", None)
        if callable(abort):
            with suppress(Exception):
                _reset_on_close(transport.get_extra_info("socket"))  # type: ignore[union-attr]
                abort()


class WebSocketEndpoint:
    """A raw ASGI app that serves every websocket it is given through ``gateway``."""

    __slots__ = ("_frames", "gateway")

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._frames = FrameCache()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one websocket connection (scope type ``websocket``)."""
        if scope["type"] != "websocket":
            raise RuntimeError("WebSocketEndpoint serves websocket scopes only")
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await self.gateway.serve(
            ASGITransport(receive, send, self._frames), handshake_from_scope(scope)
        )
