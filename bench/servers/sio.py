"""python-socketio: ``AsyncServer`` with ``AsyncRedisManager`` (one room per user) under the
same uvicorn stack as notifykit, websocket transport only.

Clients authenticate with the same JWT, sent in the Socket.IO ``auth`` payload and verified
with PyJWT in the ``connect`` handler. AsyncRedisManager uses one Redis channel for everything:
every instance receives every emit and filters by room.

    python -m bench.servers.sio --port 8001 --redis-url redis://127.0.0.1:6400/0
"""

from __future__ import annotations

import argparse
from typing import Any

import jwt
import socketio

from ..common import PREFIX, SECRET
from .uvicorn_runner import run


def build_app(redis_url: str, prefix: str) -> Any:
    """The ASGI app: a Socket.IO server whose connections join the room of their user."""
    manager = socketio.AsyncRedisManager(redis_url, channel=f"{prefix}:socketio")
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        transports=["websocket"],
        logger=False,
        engineio_logger=False,
    )

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            claims = jwt.decode(token or "", SECRET, algorithms=["HS256"])
        except jwt.PyJWTError as exc:
            raise socketio.exceptions.ConnectionRefusedError("invalid token") from exc
        await sio.enter_room(sid, str(claims["sub"]))

    return socketio.ASGIApp(sio)


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
