"""``notifykit serve``: check every setting, build the hub and its app, run them under uvicorn.

Settings are checked before anything starts (exit 2 with one line); Redis being unreachable is
not a settings error: the service starts degraded and the propagator keeps reconnecting. The
server itself, its shutdown sequence and its guards are in :mod:`.server`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import secrets
import shlex
import shutil
import sys
from typing import TYPE_CHECKING

from ..jwt import JWTAuthenticator, mint_token
from ..topics import claim_topics_policy
from .backends import build_backends
from .client import claims_for
from .settings import UsageError, add_settings

if TYPE_CHECKING:
    import argparse

    from ..adapters.asgi import NotifyApp
    from ..hub import Hub
    from .settings import Settings

__all__ = [
    "SPARE_DESCRIPTORS",
    "add_serve_parser",
    "build_app",
    "build_authenticator",
    "dev_settings",
    "own_command",
    "print_dev_info",
    "raise_descriptor_limit",
    "serve_command",
]

_NEEDED = ("starlette", "uvicorn", "httptools", "websockets")
"""What ``serve`` runs on: the ``server`` extra (``uvicorn[standard]`` brings the last two)."""


def add_serve_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``serve`` subcommand."""
    serve = commands.add_parser("serve", help="run the notification service under uvicorn")
    serve.set_defaults(handler=serve_command)
    add_settings(serve, "serve")


def serve_command(args: argparse.Namespace, settings: Settings) -> int:
    """``notifykit serve``: check every setting, then run the service until stopped."""
    if any(importlib.util.find_spec(name) is None for name in _NEEDED):
        raise UsageError("notifykit serve needs uvicorn: pip install 'notifykit[server]'")
    if settings.dev or settings.demo:
        settings = dev_settings(settings)
    authenticator = build_authenticator(settings)
    if not settings.api_key:
        raise UsageError(
            "no API key: without one nothing can publish (POST /publish is disabled); pass "
            "--api-key or set NOTIFYKIT_API_KEY (or use --dev to generate one)"
        )
    backends = build_backends(settings)  # last: it creates (unconnected) Redis clients
    from ..hub import Hub

    hub = Hub(
        backends.propagator,
        presence=backends.presence,
        shutdown_timeout=settings.shutdown_timeout,
        max_data_bytes=settings.max_data_bytes,
    )
    app = build_app(hub, authenticator, settings)
    shortage = raise_descriptor_limit(settings.max_connections)
    if shortage:
        print(f"notifykit: warning: {shortage}", file=sys.stderr, flush=True)
    if settings.dev:
        print_dev_info(settings, authenticator)
    if settings.demo:
        print(f"notifykit demo (development only): {_base_url(settings)}/demo", flush=True)
    from .server import run_server

    description = f"instance {backends.instance_id}: {backends.description}"
    return run_server(app, hub, settings, description)


def build_app(hub: Hub, authenticator: JWTAuthenticator, settings: Settings) -> NotifyApp:
    """The ASGI app ``serve`` runs: the one place that builds it from the settings."""
    from ..adapters.asgi import NotifyApp

    app = NotifyApp(
        hub,
        authenticator,
        api_key=settings.api_key,
        allowed_origins=settings.allow_origin,
        allow_anonymous=settings.allow_anonymous,
        topic_policy=claim_topics_policy(settings.topics_claim),
        max_publish_bytes=settings.max_publish_bytes,
        queue_size=settings.queue_size,
        queue_bytes=settings.queue_bytes,
        max_frame_bytes=settings.max_frame_bytes,
        max_connections=settings.max_connections,
        max_user_connections=settings.max_user_connections,
        max_frame_rate=settings.max_frame_rate,
        frame_burst=settings.frame_burst,
        close_timeout=settings.close_timeout,
    )
    if settings.demo:
        from ..adapters.asgi.static import DemoTokens, demo_routes

        tokens = DemoTokens.matching(authenticator, settings.jwt_secret, settings.topics_claim)
        app.http.router.routes.extend(demo_routes(hub, tokens))
    return app


SPARE_DESCRIPTORS = 256
"""File descriptors ``serve`` keeps for more than its websockets: the listening socket, Redis,
HTTP requests, and connections being refused."""


def raise_descriptor_limit(max_connections: int) -> str | None:
    """Raise this process's soft limit of open files (``ulimit -n``) towards what
    ``max_connections`` websockets need (up to the hard limit, as Go's runtime does); return a
    warning if it still falls short, else None."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    needed = max_connections + SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    if soft != unlimited and soft < needed:
        target = needed if hard == unlimited else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == unlimited or soft >= needed:
        return None
    return (
        f"--max-connections {max_connections} needs about {needed} open files, but this "
        f"process may open {soft} (ulimit -n, hard limit {hard}): beyond about "
        f"{max(0, soft - SPARE_DESCRIPTORS)} connections, new ones fail instead of getting "
        "1013. Raise the limit (ulimit -n, LimitNOFILE=) or lower --max-connections."
    )


def dev_settings(settings: Settings) -> Settings:
    """``settings`` with a generated JWT secret and API key where none is given; warns (on
    stderr) when other instances on the same Redis could not share them."""
    generated = dataclasses.replace(
        settings,
        jwt_secret=settings.jwt_secret
        or (None if settings.jwt_public_key_file else secrets.token_urlsafe(48)),
        api_key=settings.api_key or (secrets.token_urlsafe(24),),
    )
    shared = settings.redis_url or settings.redis_cluster_url
    if shared and (generated.jwt_secret != settings.jwt_secret or not settings.api_key):
        print(
            "notifykit: warning: --dev generated a secret or an API key for this instance "
            "only; other instances on the same Redis will refuse its tokens and keys. Give "
            "every instance the same NOTIFYKIT_JWT_SECRET and NOTIFYKIT_API_KEY.",
            file=sys.stderr,
            flush=True,
        )
    return generated


def build_authenticator(settings: Settings) -> JWTAuthenticator:
    """The JWT authenticator the settings describe; raises UsageError/ConfigurationError."""
    public_key = None
    if settings.jwt_public_key_file:
        try:
            with open(settings.jwt_public_key_file, encoding="utf-8") as file:
                public_key = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --jwt-public-key-file: {exc}") from None
    if settings.jwt_secret and public_key is not None:
        raise UsageError("give --jwt-secret or --jwt-public-key-file, not both")
    if not settings.jwt_secret and public_key is None:
        raise UsageError(
            "no JWT key: pass --jwt-secret (or NOTIFYKIT_JWT_SECRET) or --jwt-public-key-file; "
            "--dev generates a secret"
        )
    default = ["RS256"] if public_key is not None else ["HS256"]
    return JWTAuthenticator(
        secret=settings.jwt_secret or None,
        public_key=public_key,
        algorithms=settings.jwt_algorithm or default,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        leeway=settings.jwt_leeway,
        user_claim=settings.user_claim,
    )


def own_command() -> list[str]:
    """How to run this same ``notifykit`` from another terminal: ``notifykit`` when that is
    the one on ``PATH``, else the path it was started by (``.venv/bin/notifykit``), else
    ``<this python> -m notifykit``."""
    started_by = sys.argv[0] if sys.argv else ""
    on_path = shutil.which("notifykit")
    if os.path.basename(started_by) == "notifykit":
        if on_path and os.path.realpath(on_path) == os.path.realpath(started_by):
            return ["notifykit"]
        return [started_by]
    return [sys.executable, "-m", "notifykit"]


def _base_url(settings: Settings) -> str:
    """``http://host:port`` a browser on this machine reaches the server at."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{'[' + host + ']' if ':' in host else host}:{settings.port}"


def print_dev_info(settings: Settings, authenticator: JWTAuthenticator) -> None:
    """Print, before the server starts, what a developer needs to try it at once."""
    base = _base_url(settings).removeprefix("http://")
    lines = ["notifykit dev mode: generated settings below; never use --dev in production."]
    if settings.jwt_secret:
        lines.append(f"  JWT secret:    {settings.jwt_secret}")
    api_key = settings.api_key[0]
    lines.append(f"  API key:       {api_key}")
    command = [*own_command(), "publish", "--url", f"http://{base}", "--api-key", api_key]
    command += ["--user", "demo", "--event", "hello", "--data", '{"text": "hi"}']
    if settings.jwt_secret:
        hmac = [a for a in authenticator.algorithms if a.startswith("HS")]
        token = mint_token(
            "demo",
            secret=settings.jwt_secret,
            ttl=3600,
            algorithm=hmac[0],
            claims=claims_for(settings, "demo", {settings.topics_claim: ["demo:*"]}),
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
        )
        lines.append('  sample token (user "demo", topics ["demo:*"], valid 1 h):')
        lines.append(f"  token:         {token}")
        lines.append(f"  websocket:     ws://{base}/ws?token={token}")
    else:
        lines.append(f"  websocket:     ws://{base}/ws (tokens come from your identity provider)")
    lines.append(f"  publish:       {shlex.join(command)}")
    lines.append("  (run the publish command in a second terminal, in this directory)")
    print("\n".join(lines), flush=True)
