"""encode/broadcaster (Redis backend) with Starlette websockets, one channel per user.

Each websocket verifies its JWT (``token`` query parameter, PyJWT), then subscribes to its
user's channel and to the broadcast channel and forwards both, following broadcaster's own
chat example (a task group with a receiver that cancels the senders on disconnect). It sends
one ``ready`` text frame once both subscriptions are made.

    python -m bench.servers.bcast --port 8001 --redis-url redis://127.0.0.1:6400/0
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import jwt
from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from ..common import PREFIX, SECRET
from .uvicorn_runner import run


def build_app(redis_url: str, prefix: str) -> Any:
    """The Starlette app with one websocket route, ``/ws``."""
    broadcast = Broadcast(redis_url)

    async def forward(websocket: WebSocket, subscriber: Any) -> None:
        async for event in subscriber:
            if event is not None:
                await websocket.send_text(event.message)

    async def endpoint(websocket: WebSocket) -> None:
        try:
            claims = jwt.decode(
                websocket.query_params.get("token", ""), SECRET, algorithms=["HS256"]
            )
        except jwt.PyJWTError:
            await websocket.close(4001)
            return
        await websocket.accept()
        user_channel = f"{prefix}:u:{claims['sub']}"
        async with (
            broadcast.subscribe(user_channel) as mine,
            broadcast.subscribe(f"{prefix}:all") as everyone,
            anyio.create_task_group() as tasks,
        ):
            tasks.start_soon(forward, websocket, mine)
            tasks.start_soon(forward, websocket, everyone)
            await websocket.send_text("ready")
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
            tasks.cancel_scope.cancel()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with broadcast:
            yield

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)], lifespan=lifespan)


def cli() -> None:
    """Parse arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", default=PREFIX)
    args = parser.parse_args()
    run(build_app(args.redis_url, args.prefix), args.port)


if __name__ == "__main__":
    cli()
