"""notifykit as an application would deploy it: ``Hub(RedisPropagator(url))`` and
``hub.asgi_app(JWTAuthenticator(secret=...), api_key=...)`` under uvicorn.

``--single-channel`` swaps in the bench-only single-channel propagator (the scaling baseline).

    python -m bench.servers.nk --port 8001 --redis-url redis://127.0.0.1:6400/0
"""

from __future__ import annotations

import argparse

from notifykit import Hub, JWTAuthenticator
from notifykit.adapters.asgi import NotifyApp
from notifykit.protocols import Propagator

from ..common import API_KEY, PREFIX, SECRET
from .uvicorn_runner import run


def cli() -> None:
    """Parse arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", default=PREFIX)
    parser.add_argument("--single-channel", action="store_true")
    args = parser.parse_args()

    from notifykit.redis import RedisPropagator

    propagator: Propagator = RedisPropagator(args.redis_url, prefix=args.prefix)
    if args.single_channel:
        from ..single_channel import SingleChannelPropagator

        propagator = SingleChannelPropagator(propagator)
    hub = Hub(propagator)
    run(NotifyApp(hub, JWTAuthenticator(secret=SECRET), api_key=API_KEY), args.port)


if __name__ == "__main__":
    cli()
