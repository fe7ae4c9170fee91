"""The ASGI adapter: a plain ASGI websocket handler (no framework class on the hot path).

Measured with the same design, Starlette's ``WebSocket`` class costs ~1.2x the server CPU per
message of a plain ASGI handler; this module speaks the ASGI websocket messages directly and
still mounts anywhere an ASGI app can (Starlette, FastAPI, any ASGI server).
"""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from ..model import Handshake

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, MutableMapping

    from ..gateway import Gateway

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Coroutine[Any, Any, None]]

__all__ = ["ASGITransport", "WebSocketEndpoint", "handshake_from_scope"]


def handshake_from_scope(scope: Scope) -> Handshake:
    """Build a :class:`~notifykit.model.Handshake` from an ASGI websocket scope."""
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
    )


class ASGITransport:
    """:class:`~notifykit.protocols.Transport` over ASGI ``receive``/``send``."""

    __slots__ = ("_closed", "_receive", "_send")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._closed = False

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

    def send(self, text: str) -> Coroutine[Any, Any, None]:
        """Send one text frame: the server's own ``send`` coroutine, with no wrapper around it
        (this is the hot path). A server reports a gone client with an ``OSError`` (uvicorn's
        ``ClientDisconnected``), which the connection treats as :class:`TransportClosed`."""
        return self._send({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str) -> None:
        """Send ``websocket.close``; a no-op once the client is gone."""
        if self._closed:
            return
        self._closed = True
        with suppress(OSError, RuntimeError):
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


class WebSocketEndpoint:
    """A raw ASGI app that serves every websocket it is given through ``gateway``."""

    __slots__ = ("gateway",)

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one websocket connection (scope type ``websocket``)."""
        if scope["type"] != "websocket":
            raise RuntimeError("WebSocketEndpoint serves websocket scopes only")
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await self.gateway.serve(ASGITransport(receive, send), handshake_from_scope(scope))
