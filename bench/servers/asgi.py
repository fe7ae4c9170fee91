"""The serving stack's floor: the raw server's design as a bare ASGI app under the same
uvicorn stack as notifykit (uvloop, httptools, websockets-sansio).

Per-user channels plus one broadcast channel, one reader task, no authentication (``user``
query parameter), a ``ready`` frame once the channel is confirmed — like ``raw``. The reader
fans each payload out by awaiting each connection's ASGI ``send`` in turn (with uvicorn that
completes without suspending unless the socket is flow-controlled), reusing one message dict
per payload: the least a plain ASGI handler can do per delivery. A diagnostic variant: the
gap raw → asgi is the ASGI server's cost, asgi → notifykit is notifykit's own.

    python -m bench.servers.asgi --port 8001 --redis-url redis://127.0.0.1:6400/0
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from ..common import PREFIX
from .redis_sub import open_subscriber
from .uvicorn_runner import run

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

logger = logging.getLogger("bench.asgi")


class BareASGI:
    """The ASGI app: lifespan starts the Redis reader; websockets register their ``send``."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.all_channel = f"{prefix}:all".encode()
        self.everyone: set[Send] = set()
        self.by_channel: dict[bytes, set[Send]] = {}
        self.pending: dict[bytes, asyncio.Future[None]] = {}
        self.connection: Any = None

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        """Dispatch lifespan and websocket scopes."""
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "websocket":
            await self.websocket(scope, receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        """Connect to Redis and run the reader for the server's lifetime."""
        await receive()
        self.connection = await open_subscriber(self.redis_url)
        reader = asyncio.create_task(self.read())
        await self._subscribe(self.all_channel)
        await send({"type": "lifespan.startup.complete"})
        await receive()
        reader.cancel()
        await self.connection.disconnect()
        await send({"type": "lifespan.shutdown.complete"})

    async def _subscribe(self, channel: bytes) -> None:
        future = self.pending.get(channel)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self.pending[channel] = future
            await self.connection.send_command("SUBSCRIBE", channel)
        await asyncio.shield(future)

    async def read(self) -> None:
        """The one reader: await each target connection's ``send`` in turn."""
        by_channel = self.by_channel
        all_channel = self.all_channel
        everyone = self.everyone
        read = self.connection.read_response
        while True:
            response = await read()
            kind = response[0]
            if kind == b"message":
                channel = response[1]
                targets = everyone if channel == all_channel else by_channel.get(channel)
                if targets:
                    message = {"type": "websocket.send", "text": response[2].decode()}
                    for target in list(targets):
                        try:  # noqa: SIM105 (a with-statement costs more per delivery)
                            await target(message)
                        except (OSError, RuntimeError):  # gone; its handler unregisters it
                            pass
            elif kind == b"subscribe":
                future = self.pending.pop(response[1], None)
                if future is not None and not future.done():
                    future.set_result(None)

    async def websocket(
        self, scope: MutableMapping[str, Any], receive: Receive, send: Send
    ) -> None:
        """Register ``send`` under the user's channel until the client leaves."""
        if (await receive())["type"] != "websocket.connect":
            return
        user = parse_qs(scope.get("query_string", b"").decode()).get("user", [""])[0]
        if not user:
            await send({"type": "websocket.close", "code": 4001})
            return
        channel = f"{self.prefix}:u:{user}".encode()
        members = self.by_channel.get(channel)
        if members is None:
            members = self.by_channel[channel] = set()
            await self._subscribe(channel)
        elif channel in self.pending:
            await asyncio.shield(self.pending[channel])
        await send({"type": "websocket.accept"})
        members.add(send)
        self.everyone.add(send)
        try:
            await send({"type": "websocket.send", "text": "ready"})
            while (await receive())["type"] != "websocket.disconnect":
                pass
        finally:
            self.everyone.discard(send)
            members.discard(send)
            if not members and self.by_channel.get(channel) is members:
                del self.by_channel[channel]
                await self.connection.send_command("UNSUBSCRIBE", channel)


def cli() -> None:
    """Parse arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", default=PREFIX)
    args = parser.parse_args()
    run(BareASGI(args.redis_url, args.prefix), args.port)


if __name__ == "__main__":
    cli()
