"""``notifykit serve``: check every setting, build the hub and its app, run them under uvicorn.

Settings are checked before anything starts (exit 2 with one line); Redis being unreachable is
not a settings error: the service starts degraded and the propagator keeps reconnecting.
"""

from __future__ import annotations

import importlib.util
import logging
import secrets
import shlex
from typing import TYPE_CHECKING, Any

from ..jwt import JWTAuthenticator, mint_token
from ..topics import claim_topics_policy
from .backends import build_backends
from .client import add_jwt_settings, claims_for
from .settings import LOG_LEVELS, UsageError, add_setting

if TYPE_CHECKING:
    import argparse

    from ..hub import Hub
    from ..service import NotifyApp
    from .backends import Backends

__all__ = [
    "WS_SIZE_FACTOR",
    "add_serve_parser",
    "build_authenticator",
    "print_dev_info",
    "run_server",
    "serve_command",
]

WS_SIZE_FACTOR = 4
"""The websocket layer drops (1009) frames over this many times ``--max-frame-bytes``; frames
between the two limits get a ``frame_too_large`` error frame and the connection stays."""

logger = logging.getLogger("notifykit.serve")


def add_serve_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``serve`` subcommand."""
    serve = commands.add_parser("serve", help="run the notification service under uvicorn")
    serve.set_defaults(handler=serve_command)
    add_setting(serve, "--host", "interface to listen on (0.0.0.0 in a container)")
    add_setting(serve, "--port", "TCP port", type=int)
    add_jwt_settings(serve)
    add_setting(serve, "--jwt-public-key-file", "PEM public key verifying RS*/PS*/ES*/EdDSA tokens")
    add_setting(serve, "--jwt-leeway", "seconds of clock skew tolerated on exp/nbf", type=float)
    add_setting(serve, "--topics-claim", "token claim listing the topics a client may subscribe to")
    add_setting(serve, "--api-key", "key accepted by POST /publish; repeat to rotate", repeat=True)
    add_setting(serve, "--allow-origin", "browser Origin allowed to connect; repeat", repeat=True)
    add_setting(serve, "--allow-anonymous", "accept clients without a token (broadcasts only)")
    add_setting(serve, "--queue-size", "frames queued per connection before 4008", type=int)
    add_setting(serve, "--max-frame-bytes", "largest client frame accepted", type=int)
    add_setting(serve, "--max-publish-bytes", "largest POST /publish body (413 beyond)", type=int)
    add_setting(serve, "--log-level", "log level", choices=LOG_LEVELS)
    add_setting(serve, "--redis-url", "Redis URL: propagation and presence across instances")
    add_setting(serve, "--redis-cluster-url", "any node of a Redis Cluster (sharded pub/sub)")
    add_setting(serve, "--redis-prefix", "channel and key prefix, to share one Redis")
    add_setting(
        serve, "--presence-ttl", "seconds a crashed instance's users stay online", type=float
    )
    add_setting(serve, "--instance-id", "this instance's name in presence, logs and Redis")
    add_setting(serve, "--dev", "development: generate a secret and an API key and print them")
    add_setting(serve, "--demo", "development: a demo page at /demo that mints tokens (as --dev)")


def serve_command(args: argparse.Namespace) -> int:
    """``notifykit serve``: check every setting, then run the service until stopped."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UsageError("notifykit serve needs uvicorn: pip install 'notifykit[server]'") from None
    for name in ("queue_size", "max_frame_bytes", "max_publish_bytes"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.dev or args.demo:
        if not args.jwt_secret and not args.jwt_public_key_file:
            args.jwt_secret = secrets.token_urlsafe(48)
        if not args.api_key:
            args.api_key = [secrets.token_urlsafe(24)]
    authenticator = build_authenticator(args)
    if not args.api_key:
        raise UsageError(
            "no API key: without one nothing can publish (POST /publish is disabled); pass "
            "--api-key or set NOTIFYKIT_API_KEY (or use --dev to generate one)"
        )
    backends = build_backends(args)  # last: it creates (unconnected) Redis clients
    from ..hub import Hub

    hub = Hub(backends.propagator, presence=backends.presence)
    app = hub.asgi_app(
        authenticator,
        api_key=args.api_key,
        allowed_origins=args.allow_origin,
        allow_anonymous=args.allow_anonymous,
        topic_policy=claim_topics_policy(args.topics_claim),
        max_publish_bytes=args.max_publish_bytes,
        queue_size=args.queue_size,
        max_frame_bytes=args.max_frame_bytes,
    )
    if args.demo:
        from ..adapters.asgi_static import DemoTokens, demo_routes

        tokens = DemoTokens.matching(authenticator, args.jwt_secret, args.topics_claim)
        app.http.router.routes.extend(demo_routes(hub, tokens))
        print(f"notifykit demo (development only): http://{args.host}:{args.port}/demo", flush=True)
    if args.dev:
        print_dev_info(args, authenticator)
    return run_server(app, hub, args, backends)


def build_authenticator(args: argparse.Namespace) -> JWTAuthenticator:
    """The JWT authenticator the settings describe; raises UsageError/ConfigurationError."""
    public_key = None
    if args.jwt_public_key_file:
        try:
            with open(args.jwt_public_key_file, encoding="utf-8") as file:
                public_key = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --jwt-public-key-file: {exc}") from None
    if args.jwt_secret and public_key is not None:
        raise UsageError("give --jwt-secret or --jwt-public-key-file, not both")
    if not args.jwt_secret and public_key is None:
        raise UsageError(
            "no JWT key: pass --jwt-secret (or NOTIFYKIT_JWT_SECRET) or --jwt-public-key-file; "
            "--dev generates a secret"
        )
    default = ["RS256"] if public_key is not None else ["HS256"]
    return JWTAuthenticator(
        secret=args.jwt_secret or None,
        public_key=public_key,
        algorithms=args.jwt_algorithm or default,
        audience=args.jwt_audience,
        issuer=args.jwt_issuer,
        leeway=args.jwt_leeway,
        user_claim=args.user_claim,
    )


def print_dev_info(args: argparse.Namespace, authenticator: JWTAuthenticator) -> None:
    """Print, before the server starts, what a developer needs to try it at once."""
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    base = f"{'[' + host + ']' if ':' in host else host}:{args.port}"
    lines = ["notifykit dev mode: generated settings below; never use --dev in production."]
    if args.jwt_secret:
        lines.append(f"  JWT secret:    {args.jwt_secret}")
    lines.append(f"  API key:       {args.api_key[0]}")
    command = ["notifykit", "publish", "--url", f"http://{base}", "--api-key", args.api_key[0]]
    command += ["--user", "demo", "--event", "hello", "--data", '{"text": "hi"}']
    if args.jwt_secret:
        hmac = [a for a in authenticator.algorithms if a.startswith("HS")]
        token = mint_token(
            "demo",
            secret=args.jwt_secret,
            ttl=3600,
            algorithm=hmac[0],
            claims=claims_for(args, "demo", {args.topics_claim: ["demo:*"]}),
            audience=args.jwt_audience,
            issuer=args.jwt_issuer,
        )
        lines.append('  sample token (user "demo", topics ["demo:*"], valid 1 h):')
        lines.append(f"  token:         {token}")
        lines.append(f"  websocket:     ws://{base}/ws?token={token}")
    else:
        lines.append(f"  websocket:     ws://{base}/ws (tokens come from your identity provider)")
    lines.append(f"  publish:       {shlex.join(command)}")
    print("\n".join(lines), flush=True)


def run_server(app: NotifyApp, hub: Hub, args: argparse.Namespace, backends: Backends) -> int:
    """Run ``app`` under uvicorn until SIGINT/SIGTERM; returns the exit code."""
    import uvicorn

    # notifykit's own loggers print beside uvicorn's, at the same level.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:  %(name)s: %(message)s"))
    root = logging.getLogger("notifykit")
    root.addHandler(handler)
    root.setLevel(args.log_level.upper())
    logger.info("instance %s: %s", backends.instance_id, backends.description)
    sansio = importlib.util.find_spec("websockets") is not None
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        http="auto",
        ws="websockets-sansio" if sansio else "auto",
        ws_max_size=args.max_frame_bytes * WS_SIZE_FACTOR,
        lifespan="on",
        log_level=args.log_level,
        timeout_graceful_shutdown=10,
    )
    server = _server_class()(config, hub)
    server.run()
    return 0 if server.started else 3


def _server_class() -> type[Any]:
    """uvicorn's ``Server`` with notifykit's shutdown order (defined late: uvicorn is optional)."""
    import asyncio

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, but websockets are closed by the hub (1001 going away) before
        uvicorn would close them itself (1012)."""

        def __init__(self, config: uvicorn.Config, hub: Hub) -> None:
            super().__init__(config)
            self.hub = hub

        async def shutdown(self, sockets: Any = None) -> None:
            for listener in self.servers:
                listener.close()  # accept no new connection while the hub says goodbye
            await self.hub.aclose()
            if self.server_state.tasks:  # let each gateway send its close frame (uvicorn
                # runs on asyncio only, so asyncio is fine here)
                await asyncio.wait(set(self.server_state.tasks), timeout=3)
            await super().shutdown(sockets)

    return Server
