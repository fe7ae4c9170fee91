"""An in-memory websocket, for driving ``Gateway.serve`` without sockets.

:func:`memory_websocket` returns the two ends of one websocket::

    client, transport = memory_websocket()
    tasks.start_soon(gateway.serve, transport, handshake)
    welcome = await client.recv()               # a parsed wire.ServerFrame
    await client.send_json({"type": "ping"})
    client.disconnect()

:class:`MemoryTransport` is the server end: a real implementation of
:class:`notifykit.protocols.Transport` (the in-memory counterpart of the ASGI adapter's), not a
mock. :class:`MemoryClient` is the test's end.

A client that stops reading is simulated by ``read_buffer``: the client end holds at most that
many unread frames, and the server's ``send`` then waits, as it would on a socket whose peer
stopped reading. That is how slow consumers are tested.

Nothing here holds a resource that needs closing: both directions are small bounded queues of
plain Python objects.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel

from notifykit.errors import TransportClosed
from notifykit.wire import ServerFrame, parse_server

__all__ = ["MemoryClient", "MemoryTransport", "ServerClosed", "memory_websocket"]

T = TypeVar("T")

DEFAULT_TIMEOUT = 2.0
"""Seconds a client-side wait (a frame, the close) may take before ``TimeoutError``."""


class ServerClosed(Exception):
    """The server closed the websocket (and, for ``recv``, every frame sent before was read)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed by the server: {code} {reason!r}")
        self.code = code
        self.reason = reason


class _Queue(Generic[T]):
    """A bounded FIFO for one reader and one writer; ``end()`` marks the end of the stream."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[T] = deque()
        self._capacity = capacity
        self._changed = anyio.Event()
        self.ended = False

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def try_put(self, item: T) -> bool:
        """Append if there is room now; False (nothing appended) if the queue is full."""
        if len(self._items) >= self._capacity:
            return False
        self._items.append(item)
        self._notify()
        return True

    async def put(self, item: T, *, is_open: Callable[[], bool]) -> bool:
        """Wait for room, then append; False (and nothing appended) once ``is_open()`` fails."""
        while is_open():
            if len(self._items) < self._capacity:
                self._items.append(item)
                self._notify()
                return True
            await self._changed.wait()
        return False

    async def get(self) -> T | None:
        """The next item, waiting for one; None once the stream ended and nothing is left.

        Always yields to the event loop, as a socket read does."""
        await anyio.lowlevel.checkpoint()
        while not self._items:
            if self.ended:
                return None
            await self._changed.wait()
        item = self._items.popleft()
        self._notify()
        return item

    def end(self) -> None:
        """No more items will come; wake the reader (and a writer waiting for room)."""
        self.ended = True
        self._notify()

    def __len__(self) -> int:
        return len(self._items)


class MemoryTransport:
    """The server end of an in-memory websocket: a :class:`notifykit.protocols.Transport`."""

    def __init__(self, client: MemoryClient) -> None:
        self._client = client

    async def accept(self, subprotocol: str | None) -> None:
        """Complete the handshake, selecting ``subprotocol``."""
        client = self._client
        client.history.append("accept")
        client.accepted = True
        client.subprotocol = subprotocol
        await anyio.lowlevel.checkpoint()

    async def receive(self) -> str | bytes | None:
        """The next client message, or None once the client disconnected or we closed."""
        client = self._client
        if client.close_code is not None:
            await anyio.lowlevel.checkpoint()
            return None
        return await client._to_server.get()

    def _check_send(self, text: str) -> None:
        client = self._client
        if client.send_error is not None:
            raise client.send_error
        if not client._open():
            raise TransportClosed("the client is gone")
        text.encode("utf-8")  # a websocket sends UTF-8: text that is not valid Unicode fails here

    def send_now(self, text: str) -> bool:
        """Hand one text frame over if the client's read buffer has room; False if not.

        Raises :class:`~notifykit.errors.TransportClosed` once the client disconnected or the
        server closed; raises the client's ``send_error`` if one was set.
        """
        self._check_send(text)
        if not self._client._to_client.try_put(text):
            return False
        self._client.history.append("send")
        return True

    async def send(self, text: str) -> None:
        """Send one text frame, waiting while the client's read buffer is full (raises as
        :meth:`send_now` does)."""
        client = self._client
        self._check_send(text)
        if not await client._to_client.put(text, is_open=client._open):
            raise TransportClosed("the client is gone")
        client.history.append("send")

    def abort(self) -> None:
        """Drop the connection: the client sees it end without a close frame."""
        client = self._client
        client.history.append("abort")
        client.aborted = True
        client.dropped.set()
        client._to_client.end()
        client._to_server.end()

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code`` and ``reason``; never raises; only the first close counts."""
        client = self._client
        client.history.append("close")
        if client.close_code is None and not client.disconnected:
            client.close_code = code
            client.close_reason = reason
            client._closed.set()
        client._to_client.end()
        client._to_server.end()
        await anyio.lowlevel.checkpoint()


class MemoryClient:
    """The test's end of an in-memory websocket.

    ``history`` lists what the server did, in order (``"accept"``, ``"send"``, ``"close"``,
    ``"abort"``); ``aborted`` is True once the server dropped the connection;
    ``subprotocol`` is the one the server selected; ``close_code``/``close_reason`` are set
    once the server closed. Set ``send_error`` to an exception to make every later server
    ``send`` raise it (a transport that breaks).
    """

    def __init__(self, *, read_buffer: int = 10_000, send_buffer: int = 10_000) -> None:
        self._to_client: _Queue[str] = _Queue(read_buffer)
        self._to_server: _Queue[str | bytes] = _Queue(send_buffer)
        self._closed = anyio.Event()
        self.history: list[str] = []
        self.accepted = False
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.disconnected = False
        self.aborted = False
        self.dropped = anyio.Event()  # set when the server aborts the connection
        self.send_error: BaseException | None = None

    def _open(self) -> bool:
        return self.close_code is None and not self.disconnected and not self.aborted

    # --- sending --------------------------------------------------------------------------

    async def send_text(self, text: str) -> None:
        """Send a text frame; raises :class:`ServerClosed` if the server already closed."""
        await self._send(text)

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary frame; raises :class:`ServerClosed` if the server already closed."""
        await self._send(data)

    async def send_json(self, obj: Any) -> None:
        """Send ``obj`` as a JSON text frame."""
        await self._send(json.dumps(obj, ensure_ascii=False))

    async def _send(self, message: str | bytes) -> None:
        if self.disconnected:
            raise RuntimeError("this client has disconnected")
        if not await self._to_server.put(message, is_open=self._open):
            raise ServerClosed(self.close_code or 0, self.close_reason)

    def disconnect(self) -> None:
        """Go away, as a client closing its socket does; the server's ``receive`` returns None."""
        self.disconnected = True
        self._to_server.end()
        self._to_client.end()

    # --- receiving ------------------------------------------------------------------------

    async def recv_text(self, timeout: float = DEFAULT_TIMEOUT) -> str:  # noqa: ASYNC109
        """The next frame's text, waiting up to ``timeout`` seconds (then ``TimeoutError``).

        Raises :class:`ServerClosed` once the server closed and every earlier frame was read.
        """
        with anyio.fail_after(timeout):
            text = await self._to_client.get()
        if text is None:
            raise ServerClosed(self.close_code or 0, self.close_reason)
        return text

    async def recv(self, timeout: float = DEFAULT_TIMEOUT) -> ServerFrame:  # noqa: ASYNC109
        """The next frame, parsed with :func:`notifykit.wire.parse_server`."""
        return parse_server(await self.recv_text(timeout))

    async def closed(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[int, str]:  # noqa: ASYNC109
        """Wait up to ``timeout`` seconds for the server to close; return (code, reason).

        Frames sent before the close stay readable with :meth:`recv`.
        """
        with anyio.fail_after(timeout):
            await self._closed.wait()
        assert self.close_code is not None
        return self.close_code, self.close_reason

    @property
    def unread(self) -> int:
        """How many frames the server sent that the client has not read."""
        return len(self._to_client)


def memory_websocket(
    *, read_buffer: int = 10_000, send_buffer: int = 10_000
) -> tuple[MemoryClient, MemoryTransport]:
    """A new in-memory websocket: ``(client end, server end)``.

    ``read_buffer`` is how many unread frames the client end holds before the server's
    ``send`` waits (small values simulate a client that stopped reading); ``send_buffer`` the
    same in the other direction.
    """
    client = MemoryClient(read_buffer=read_buffer, send_buffer=send_buffer)
    return client, MemoryTransport(client)
