"""A minimal websocket client as an ``asyncio.Protocol``: cheap per message, so on a 2-core
machine the load generator leaves as much CPU as possible to the servers being measured.

It does the HTTP upgrade, parses server frames (unmasked, never fragmented by these servers),
answers pings, and per connection counts messages and, in latency mode, reads the ``"t":``
publish timestamp (``time.time_ns()``) out of the frame to record publish → receive latency.
No ``permessage-deflate`` is offered, so no server compresses. Four dialects:

* ``raw`` / ``broadcaster`` — the first frame is ``ready``; every later one is a message;
* ``notifykit`` — the first frame is ``welcome``; every later one is a notification;
* ``socketio`` — Engine.IO v4 / Socket.IO v5 over a websocket: ``0{...}`` open → send
  ``40{"token":...}`` → ``40{...}`` connected; ``42[...]`` are events; ``2`` ping → ``3``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time

_T_FIELD = b'"t":'


def _encode_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame with an all-zero mask key (the payload is sent as it is)."""
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    return header + b"\x00\x00\x00\x00" + payload


def handshake_request(
    host: str, port: int, path: str, headers: dict[str, str] | None = None
) -> bytes:
    """The HTTP/1.1 upgrade request."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class BenchClient(asyncio.Protocol):
    """One websocket connection of the load generator."""

    def __init__(self, dialect: str, request: bytes, token: str = "") -> None:
        loop = asyncio.get_running_loop()
        self.dialect = dialect
        self.request = request
        self.token = token
        self.ready: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.is_ready = False
        self.count = 0
        self.last_ns = 0
        self.latencies: list[int] | None = None
        self.close_code: int | None = None
        self.lost = False

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost before ready: {exc}"))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[: buffer.find(b"\r\n")])
            if b" 101 " not in status:
                if not self.ready.done():
                    self.ready.set_exception(ConnectionError(status.decode("latin-1")))
                if self.transport is not None:
                    self.transport.close()
                return
            self.upgraded = True
            del buffer[: end + 4]
        pos = 0
        size = len(buffer)
        while size - pos >= 2:
            first = buffer[pos]
            length = buffer[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > size:
                break
            opcode = first & 0x0F
            if opcode == 1 or opcode == 2:
                self._message(bytes(buffer[start:end]))
            elif opcode == 9:
                self._send(0xA, bytes(buffer[start:end]))
            elif opcode == 8:
                payload = buffer[start:end]
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self._send(0x8, bytes(payload[:2]))
                if self.transport is not None:
                    self.transport.close()
            pos = end
        if pos:
            del buffer[:pos]

    # --- messages -------------------------------------------------------------------------

    def _message(self, payload: bytes) -> None:
        if self.is_ready:
            if self.dialect == "socketio" and not payload.startswith(b"42"):
                if payload == b"2":
                    self._send(0x1, b"3")
                return
            self.count += 1
            now = time.time_ns()
            self.last_ns = now
            latencies = self.latencies
            if latencies is not None:
                at = payload.find(_T_FIELD) + 4
                if payload[at] == 32:  # a space after the colon (Python's default json)
                    at += 1
                latencies.append(now - int(payload[at : at + 19]))
            return
        self._handshake_message(payload)

    def _handshake_message(self, payload: bytes) -> None:
        if self.dialect == "socketio":
            if payload.startswith(b"0"):
                self._send(0x1, b"40" + json.dumps({"token": self.token}).encode())
                return
            if payload.startswith(b"40"):
                self._set_ready()
                return
            if payload == b"2":
                self._send(0x1, b"3")
                return
            self._fail(f"socket.io refused: {payload[:200]!r}")
            return
        if self.dialect == "notifykit":
            if b'"welcome"' in payload:
                self._set_ready()
            else:
                self._fail(f"expected welcome, got {payload[:200]!r}")
            return
        if payload == b"ready":
            self._set_ready()
        else:
            self._fail(f"expected ready, got {payload[:200]!r}")

    def _set_ready(self) -> None:
        self.is_ready = True
        if not self.ready.done():
            self.ready.set_result(None)

    def _fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.close()

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_encode_frame(opcode, payload))

    # --- control --------------------------------------------------------------------------

    def reset(self, latency: bool) -> None:
        """Zero the counters; record latencies from now on if ``latency``."""
        self.count = 0
        self.last_ns = 0
        self.latencies = [] if latency else None

    def close(self) -> None:
        """Send a close frame (1000) and close the socket."""
        self._send(0x8, (1000).to_bytes(2, "big"))
        if self.transport is not None:
            self.transport.close()


def request_for(dialect: str, port: int, user: str, token: str) -> bytes:
    """The upgrade request a client of ``dialect`` sends."""
    host = "127.0.0.1"
    if dialect == "raw":
        return handshake_request(host, port, f"/?user={user}")
    if dialect == "notifykit":
        return handshake_request(
            host,
            port,
            "/ws",
            {"Sec-WebSocket-Protocol": "notifykit.v1", "Authorization": f"Bearer {token}"},
        )
    if dialect == "socketio":
        return handshake_request(host, port, "/socket.io/?EIO=4&transport=websocket")
    if dialect == "broadcaster":
        return handshake_request(host, port, f"/ws?token={token}")
    raise ValueError(f"unknown dialect {dialect!r}")
