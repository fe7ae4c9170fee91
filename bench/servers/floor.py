"""The floor: the tightest Python notification server we know, to measure notifykit against.

A ``websockets`` server (``websockets.asyncio.server``) plus a Redis subscriber that is a plain
``asyncio.Protocol`` feeding a ``hiredis.Reader`` — no client library, no pub/sub layer, no
coroutine per message. One channel per connected user (``<prefix>:u:<user>``: ``SUBSCRIBE``
when the user's first connection arrives, ``UNSUBSCRIBE`` when the last one leaves) plus one
broadcast channel (``<prefix>:all``). Each payload read from Redis is written, as the bytes it
is, to the channel's connections with ``websockets.broadcast`` (synchronous, no task per
connection). The (un)subscriptions that concurrent connects and disconnects ask for within one
event-loop pass go to Redis as one command, so a connect storm costs Redis few commands.

Two variants of the connect path:

* default — no authentication: the user id is the ``user`` query parameter, and the client gets
  one ``ready`` text frame once its channel is confirmed (the ``raw`` dialect of the load
  generator);
* ``--jwt`` — the client sends ``Authorization: Bearer <JWT>`` (and the ``notifykit.v1``
  subprotocol) as notifykit's clients do; the token is verified with PyJWT (HS256, the bench's
  secret, ``exp`` required) before the upgrade (401 otherwise), only the ``sub`` claim is kept,
  and the client gets a ``{"type":"welcome",...}`` frame once its channel is confirmed (the
  ``notifykit`` dialect).

    python -m bench.servers.floor --port 8001 --redis-url redis://127.0.0.1:6400/0 [--jwt]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import hiredis
import jwt
import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response

from ..common import PREFIX, SECRET, raise_fd_limit

logger = logging.getLogger("bench.floor")

SUBPROTOCOL = "notifykit.v1"


def resp_command(*parts: bytes) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class RedisSubscriber(asyncio.Protocol):
    """A RESP2 subscriber connection: hiredis parses, ``on_message`` gets (channel, payload).

    :meth:`subscribe` and :meth:`unsubscribe` queue a channel; everything queued in one
    event-loop pass is written as one command per kind, in the order asked (an UNSUBSCRIBE
    followed by a SUBSCRIBE of the same channel stays in that order on the wire).
    """

    def __init__(self, on_message: Callable[[bytes, bytes], None]) -> None:
        self.on_message = on_message
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.pending: dict[bytes, asyncio.Future[None]] = {}
        self.batch_kind = b""
        self.batch: list[bytes] = []
        self.flush_scheduled = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionError("Redis connection lost"))

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        on_message = self.on_message
        while (reply := reader.gets()) is not False:
            kind = reply[0]
            if kind == b"message":
                on_message(reply[1], reply[2])
            elif kind == b"subscribe":
                future = self.pending.pop(reply[1], None)
                if future is not None and not future.done():
                    future.set_result(None)

    async def subscribe(self, channel: bytes) -> None:
        """Subscribe ``channel`` and wait for Redis's confirmation (shared by concurrent
        callers for the same channel)."""
        future = self.pending.get(channel)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self.pending[channel] = future
            self._queue(b"SUBSCRIBE", channel)
        await asyncio.shield(future)

    def unsubscribe(self, channel: bytes) -> None:
        """Unsubscribe ``channel`` (nothing to wait for)."""
        self._queue(b"UNSUBSCRIBE", channel)

    def _queue(self, kind: bytes, channel: bytes) -> None:
        if kind != self.batch_kind:
            self._flush()
            self.batch_kind = kind
        self.batch.append(channel)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.batch and self.transport is not None:
            self.transport.write(resp_command(self.batch_kind, *self.batch))
        self.batch = []


class FloorServer:
    """Routing state (channel → open connections) and the websocket handler."""

    def __init__(self, prefix: str, check_jwt: bool) -> None:
        self.prefix = prefix
        self.check_jwt = check_jwt
        self.all_channel = f"{prefix}:all".encode()
        self.everyone: set[ServerConnection] = set()
        self.by_channel: dict[bytes, set[ServerConnection]] = {}
        self.subscriber: RedisSubscriber | None = None

    def forward(self, channel: bytes, payload: bytes) -> None:
        """A message from Redis: its bytes, untouched, to the channel's connections."""
        targets = self.everyone if channel == self.all_channel else self.by_channel.get(channel)
        if targets:
            broadcast(targets, payload, text=True)

    async def connect_redis(self, url: str) -> RedisSubscriber:
        """Open the subscriber connection and subscribe the broadcast channel."""
        parts = urlsplit(url)
        loop = asyncio.get_running_loop()
        _, subscriber = await loop.create_connection(
            lambda: RedisSubscriber(self.forward), parts.hostname or "127.0.0.1", parts.port or 6379
        )
        self.subscriber = subscriber
        await subscriber.subscribe(self.all_channel)
        return subscriber

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Before the upgrade: who is it? (a verified JWT with ``--jwt``, else ``?user=``)."""
        if self.check_jwt:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            try:
                if scheme.lower() != "bearer":
                    raise jwt.InvalidTokenError("no bearer token")
                claims = jwt.decode(
                    token, SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]}
                )
            except jwt.PyJWTError:
                return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid token\n")
            user = str(claims["sub"])
        else:
            user = parse_qs(urlsplit(request.path).query).get("user", [""])[0]
            if not user:
                return connection.respond(HTTPStatus.BAD_REQUEST, "no user\n")
        connection.username = user  # websockets' attribute for the authenticated user
        return None

    async def handler(self, connection: ServerConnection) -> None:
        """Register the connection under its user's channel until it closes."""
        subscriber = self.subscriber
        if subscriber is None:
            raise RuntimeError("not connected to Redis")
        user = connection.username
        channel = f"{self.prefix}:u:{user}".encode()
        members = self.by_channel.get(channel)
        if members is None:
            members = self.by_channel[channel] = set()
            await subscriber.subscribe(channel)
        elif channel in subscriber.pending:
            await asyncio.shield(subscriber.pending[channel])
        members.add(connection)
        self.everyone.add(connection)
        try:
            if self.check_jwt:
                await connection.send(json.dumps({"type": "welcome", "user": user}))
            else:
                await connection.send("ready")
            await connection.wait_closed()
        finally:
            self.everyone.discard(connection)
            members.discard(connection)
            if not members and self.by_channel.get(channel) is members:
                del self.by_channel[channel]
                subscriber.unsubscribe(channel)


async def main(port: int, redis_url: str, prefix: str, check_jwt: bool, backlog: int) -> None:
    """Serve until cancelled (SIGINT/SIGTERM)."""
    server = FloorServer(prefix, check_jwt)
    subscriber = await server.connect_redis(redis_url)
    options: dict[str, Any] = {"subprotocols": [SUBPROTOCOL]} if check_jwt else {}
    try:
        async with serve(
            server.handler,
            "127.0.0.1",
            port,
            process_request=server.process_request,
            compression=None,
            backlog=backlog,
            **options,
        ) as ws_server:
            await ws_server.serve_forever()
    finally:
        if subscriber.transport is not None:
            subscriber.transport.close()


def cli() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", default=PREFIX)
    parser.add_argument("--jwt", action="store_true", help="verify a JWT at connect")
    parser.add_argument("--backlog", type=int, default=4096)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    raise_fd_limit()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(main(args.port, args.redis_url, args.prefix, args.jwt, args.backlog))


if __name__ == "__main__":
    cli()
