"""notifykit as ``notifykit serve --redis-url`` deploys it: ``Hub(RedisPropagator(url),
presence=RedisPresence(url))`` and ``hub.asgi_app(JWTAuthenticator(secret=...), api_key=...)``
under uvicorn.

``--single-channel`` swaps in the bench-only single-channel propagator (the scaling baseline);
``--ws`` picks uvicorn's websocket implementation (the serving-stack comparison).

    python -m bench.servers.nk --port 8001 --redis-url redis://127.0.0.1:6400/0
"""

from __future__ import annotations

import argparse
import os

from notifykit import Hub, JWTAuthenticator, Propagator

from ..common import API_KEY, PREFIX, SECRET
from .uvicorn_runner import WS_IMPLEMENTATIONS, run


def cli() -> None:
    """Parse arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", default=PREFIX)
    parser.add_argument("--single-channel", action="store_true")
    parser.add_argument("--ws", default="websockets-sansio", choices=WS_IMPLEMENTATIONS)
    args = parser.parse_args()

    from notifykit.redis import RedisPresence, RedisPropagator

    propagator: Propagator = RedisPropagator(args.redis_url, prefix=args.prefix)
    if args.single_channel:
        from ..single_channel import SingleChannelPropagator

        propagator = SingleChannelPropagator(propagator)
    presence = RedisPresence(args.redis_url, prefix=args.prefix, instance_id=f"bench-{os.getpid()}")
    hub = Hub(propagator, presence=presence)
    run(hub.asgi_app(JWTAuthenticator(secret=SECRET), api_key=API_KEY), args.port, ws=args.ws)


if __name__ == "__main__":
    cli()
