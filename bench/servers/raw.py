"""The ceiling: redis.asyncio pub/sub + a ``websockets`` server, forwarding bytes untouched.

Per-user channels (``<prefix>:u:<user>``, subscribed when a user's first connection arrives and
unsubscribed when the last one leaves) plus one broadcast channel (``<prefix>:all``). One
reader task reads the subscriber connection (a low-level RESP2 connection, as notifykit's
subscriber does: no ``PubSub`` layer, no per-message dict) and
writes each payload straight into the target connections' buffers with
``websockets.broadcast`` (synchronous, no per-connection task wake-up). No authentication:
the user id is the ``user`` query parameter. After its channel is confirmed, each connection
gets one ``ready`` text frame.

    python -m bench.servers.raw --port 8001 --redis-url redis://127.0.0.1:6400/0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

from ..common import PREFIX, raise_fd_limit
from .redis_sub import open_subscriber

logger = logging.getLogger("bench.raw")


class RawServer:
    """Routing state: channel → open connections, and subscriptions awaiting confirmation."""

    def __init__(self, connection: Any, prefix: str) -> None:
        self.connection = connection
        self.prefix = prefix
        self.all_channel = f"{prefix}:all".encode()
        self.everyone: set[ServerConnection] = set()
        self.by_channel: dict[bytes, set[ServerConnection]] = {}
        self.pending: dict[bytes, asyncio.Future[None]] = {}

    async def start(self) -> None:
        """Subscribe the broadcast channel and wait for the confirmation."""
        await self._subscribe(self.all_channel)

    async def _subscribe(self, channel: bytes) -> None:
        future = self.pending.get(channel)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self.pending[channel] = future
            await self.connection.send_command("SUBSCRIBE", channel)
        await asyncio.shield(future)

    async def read(self) -> None:
        """The one reader: forward every message to its channel's connections."""
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
                    broadcast(targets, response[2], text=True)
            elif kind == b"subscribe":
                future = self.pending.pop(response[1], None)
                if future is not None and not future.done():
                    future.set_result(None)

    async def handler(self, connection: ServerConnection) -> None:
        """Register the connection under its user's channel until it closes."""
        query = parse_qs(urlsplit(connection.request.path if connection.request else "").query)
        user = query.get("user", [""])[0]
        if not user:
            await connection.close(4001, "no user")
            return
        channel = f"{self.prefix}:u:{user}".encode()
        members = self.by_channel.get(channel)
        if members is None:
            members = self.by_channel[channel] = set()
            await self._subscribe(channel)
        elif channel in self.pending:
            await asyncio.shield(self.pending[channel])
        members.add(connection)
        self.everyone.add(connection)
        try:
            await connection.send("ready")
            await connection.wait_closed()
        finally:
            self.everyone.discard(connection)
            members.discard(connection)
            if not members and self.by_channel.get(channel) is members:
                del self.by_channel[channel]
                await self.connection.send_command("UNSUBSCRIBE", channel)


async def main(port: int, redis_url: str, prefix: str) -> None:
    """Serve until cancelled (SIGINT/SIGTERM)."""
    server = RawServer(await open_subscriber(redis_url), prefix)
    reader = asyncio.create_task(server.read())
    await server.start()
    try:
        async with serve(server.handler, "127.0.0.1", port, backlog=2048) as ws_server:
            await ws_server.serve_forever()
    finally:
        reader.cancel()
        await server.connection.disconnect()


def cli() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", default=PREFIX)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    raise_fd_limit()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(main(args.port, args.redis_url, args.prefix))


if __name__ == "__main__":
    cli()
