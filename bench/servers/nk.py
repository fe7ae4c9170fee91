"""notifykit as ``notifykit serve --redis-url`` deploys it: ``Hub(RedisPropagator(url),
presence=RedisPresence(url))`` and ``NotifyApp(hub, JWTAuthenticator(secret=...),
api_key=...)`` under uvicorn (``--ws`` picks uvicorn's websocket implementation), or
(``--adapter websockets``) ``notifykit.adapters.websockets.serve(hub, ...)`` on a plain
``websockets`` server with uvloop — the serving stack of the raw baseline — or
(``--adapter channels``) a Django Channels ``ProtocolTypeRouter`` with ``AuthMiddlewareStack``,
``NotifyConsumer`` and ``ChannelsUserAuthenticator(fallback=JWTAuthenticator(...))`` under the
same uvicorn as the ASGI variant.

``--single-channel`` swaps in the bench-only single-channel propagator (the scaling baseline).

    python -m bench.servers.nk --port 8001 --redis-url redis://127.0.0.1:6400/0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from typing import Any

from notifykit import Hub, JWTAuthenticator
from notifykit.protocols import Propagator

from ..common import API_KEY, PREFIX, SECRET, raise_fd_limit
from .uvicorn_runner import WS_IMPLEMENTATIONS

GATEWAY_OPTIONS: dict[str, Any] = {"max_connections": 100_000}
"""notifykit refuses a server's 10,001st connection by default; the capacity mode fills a process
to its file-descriptor limit instead (~19,000 here), as a deployment sized for it would."""


def cli() -> None:
    """Parse arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", default=PREFIX)
    parser.add_argument("--single-channel", action="store_true")
    parser.add_argument("--adapter", choices=("asgi", "websockets", "channels"), default="asgi")
    parser.add_argument("--ws", default="websockets-sansio", choices=WS_IMPLEMENTATIONS)
    parser.add_argument("--history-size", type=int, default=100)
    args = parser.parse_args()
    from notifykit.redis import RedisPresence, RedisPropagator

    propagator: Propagator = RedisPropagator(
        args.redis_url, prefix=args.prefix, history_size=args.history_size
    )
    if args.single_channel:
        from ..single_channel import SingleChannelPropagator

        propagator = SingleChannelPropagator(propagator)
    presence = RedisPresence(args.redis_url, prefix=args.prefix, instance_id=f"bench-{os.getpid()}")
    hub = Hub(propagator, presence=presence)
    if args.adapter == "websockets":
        import uvloop

        logging.basicConfig(level=logging.WARNING)
        raise_fd_limit()
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(serve_websockets(hub, args.port))
        return

    from .uvicorn_runner import run

    if args.adapter == "channels":
        run(channels_app(hub), args.port, ws=args.ws)
        return
    from notifykit.adapters.asgi import NotifyApp

    app = NotifyApp(hub, JWTAuthenticator(secret=SECRET), api_key=API_KEY, **GATEWAY_OPTIONS)
    run(app, args.port, ws=args.ws)


def channels_app(hub: Hub) -> Any:
    """The Channels application a Django project would write (settings made in code)."""
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="bench-" + "0" * 50,
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        USE_TZ=True,
    )
    django.setup()
    from channels.auth import AuthMiddlewareStack
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.urls import path

    from notifykit.adapters.channels import (
        ChannelsUserAuthenticator,
        HubLifespan,
        NotifyConsumer,
    )

    authenticator = ChannelsUserAuthenticator(fallback=JWTAuthenticator(secret=SECRET))
    consumer = NotifyConsumer(
        hub, authenticator, allowed_origins=["http://bench.invalid"], **GATEWAY_OPTIONS
    )
    return ProtocolTypeRouter(
        {
            "websocket": AuthMiddlewareStack(URLRouter([path("ws", consumer)])),
            "lifespan": HubLifespan(hub),
        }
    )


async def serve_websockets(hub: Hub, port: int) -> None:
    """The websockets adapter until SIGTERM/SIGINT."""
    from notifykit.adapters.websockets import serve

    async with serve(
        hub,
        JWTAuthenticator(secret=SECRET),
        host="127.0.0.1",
        port=port,
        websockets_options={"backlog": 4096},
        **GATEWAY_OPTIONS,
    ) as server:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.close)
        await server.serve_forever()


if __name__ == "__main__":
    cli()
