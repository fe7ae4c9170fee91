"""A notification server on a plain ``websockets`` server: no ASGI stack, no web framework.

    pip install 'notifykit[websockets]'
    JWT_SECRET=... python server.py                 # ws://127.0.0.1:8000/ws, GET /healthz

Clients authenticate with a JWT (``Authorization: Bearer``, a ``bearer.<jwt>`` subprotocol or
``?token=``). Your application publishes from anywhere through Redis (``publish.py``), or in
this process through ``hub`` (the ``--ticker`` option broadcasts the time every few seconds).

Settings (environment): ``JWT_SECRET`` (required), ``HOST`` and ``PORT`` (127.0.0.1:8000;
or ``--port``),
``REDIS_URL`` (optional: several servers and outside publishers share notifications),
``ALLOWED_ORIGINS`` (comma-separated, for browser clients).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time

from notifykit import Hub, JWTAuthenticator
from notifykit.adapters.websockets import serve

PREFIX = "example"


def make_hub() -> Hub:
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        return Hub()
    from notifykit.redis import RedisPropagator

    return Hub(RedisPropagator(redis_url, prefix=PREFIX))


async def ticker(hub: Hub, every: float) -> None:
    """Something this process publishes by itself: the time, to everyone."""
    while True:
        await asyncio.sleep(every)
        await hub.broadcast("tick", {"time": int(time.time())})


async def main(port: int, tick_every: float | None) -> None:
    hub = make_hub()
    origins = [o for o in os.environ.get("ALLOWED_ORIGINS", "").split(",") if o]
    async with serve(
        hub,
        JWTAuthenticator(secret=os.environ["JWT_SECRET"]),
        host=os.environ.get("HOST", "127.0.0.1"),
        port=port,
        allowed_origins=origins,
        allow_anonymous=True,  # anonymous clients get broadcasts (the ticker) only
    ) as server:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.close)  # then every client gets 1001
        logging.info("serving on ws://%s:%d/ws", os.environ.get("HOST", "127.0.0.1"), server.port)
        tasks = [asyncio.create_task(ticker(hub, tick_every))] if tick_every else []
        try:
            await server.serve_forever()
        finally:
            for task in tasks:
                task.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--ticker", type=float, metavar="SECONDS", help="broadcast the time")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main(args.port, args.ticker))
