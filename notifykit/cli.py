"""The ``notifykit`` command: ``serve`` the microservice, mint a ``token``, ``publish`` over HTTP.

::

    notifykit serve --dev                                  # generated secret and API key, printed
    notifykit serve --jwt-secret "$SECRET" --api-key "$KEY" --host 0.0.0.0
    notifykit token --user 42 --ttl 3600 --topics 'team:7:*'
    notifykit publish --user 42 --event order.shipped --data '{"id": 7}'

Every setting flag ``--foo-bar`` also reads ``NOTIFYKIT_FOO_BAR`` (repeatable flags: a
comma-separated list; booleans: ``1``/``true``/``yes`` or ``0``/``false``/``no``); a flag given
on the command line wins over the environment. Exit codes: 0 done, 1 failed at run time
(server unreachable or refused the request), 2 bad flags or settings (one line on stderr, never
a traceback), 3 the server could not start (port in use, startup failed). See ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import shlex
import sys
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import ConfigurationError
from .jwt import JWTAuthenticator, mint_token
from .topics import claim_topics_policy

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from .hub import Hub
    from .service import NotifyApp

__all__ = ["SETTINGS", "build_parser", "main"]

ENV_PREFIX = "NOTIFYKIT_"


class Setting(NamedTuple):
    """A flag that can also come from ``NOTIFYKIT_<DEST>``: how to read it, and its default."""

    kind: str  # "str", "int", "float", "bool" or "list"
    default: Any


SETTINGS: Mapping[str, Setting] = {
    "host": Setting("str", "127.0.0.1"),
    "port": Setting("int", 8000),
    "jwt_secret": Setting("str", None),
    "jwt_public_key_file": Setting("str", None),
    "jwt_algorithm": Setting("list", ()),  # serve: HS256, or RS256 with a public key
    "jwt_audience": Setting("str", None),
    "jwt_issuer": Setting("str", None),
    "jwt_leeway": Setting("float", 0.0),
    "user_claim": Setting("str", "sub"),
    "topics_claim": Setting("str", "topics"),
    "api_key": Setting("list", ()),
    "allow_origin": Setting("list", ()),
    "allow_anonymous": Setting("bool", False),
    "queue_size": Setting("int", 256),
    "max_frame_bytes": Setting("int", 64 * 1024),
    "max_publish_bytes": Setting("int", 1024 * 1024),
    "log_level": Setting("str", "info"),
    "redis_url": Setting("str", None),
    "dev": Setting("bool", False),
    "url": Setting("str", "http://127.0.0.1:8000"),
}
"""Every setting flag by ``argparse`` dest; its environment variable is ``NOTIFYKIT_`` + DEST."""

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
WS_SIZE_FACTOR = 4
"""The websocket layer drops (1009) frames over this many times ``--max-frame-bytes``; frames
between the two limits get a ``frame_too_large`` error frame and the connection stays."""


class UsageError(Exception):
    """Bad flags or settings: reported in one line, exit code 2."""


class CommandFailed(Exception):
    """The command ran but failed (server unreachable, request refused): exit code 1."""


# --- entry point --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``notifykit`` command line and return its exit code."""
    args = build_parser().parse_args(argv)
    try:
        read_environment(args, os.environ)
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except (UsageError, ConfigurationError) as exc:
        _say_error(str(exc))
        return 2
    except CommandFailed as exc:
        _say_error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130


def read_environment(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """Fill every setting not given as a flag from ``NOTIFYKIT_*``, else from its default."""
    for dest, setting in SETTINGS.items():
        if not hasattr(args, dest) or getattr(args, dest) is not None:
            continue
        name = ENV_PREFIX + dest.upper()
        raw = environ.get(name, "").strip()
        value = _convert(name, setting.kind, raw) if raw else setting.default
        setattr(args, dest, value)
    if getattr(args, "log_level", "info") not in LOG_LEVELS:
        raise UsageError(f"log level must be one of {', '.join(LOG_LEVELS)}")


def _convert(name: str, kind: str, raw: str) -> Any:
    if kind == "list":
        return [item.strip() for item in raw.split(",") if item.strip()]
    if kind == "bool":
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{name}={raw!r}: expected 1/true/yes or 0/false/no")
    try:
        return int(raw) if kind == "int" else float(raw) if kind == "float" else raw
    except ValueError:
        raise UsageError(
            f"{name}={raw!r}: expected a{'n' if kind == 'int' else ''} {kind}"
        ) from None


def _say_error(message: str) -> None:
    print(f"notifykit: error: {' '.join(message.split())}", file=sys.stderr)


# --- the parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for ``notifykit`` and its three subcommands."""
    parser = argparse.ArgumentParser(
        prog="notifykit",
        description="Real-time notifications to authenticated users over websockets.",
        epilog="Every setting flag --foo-bar also reads NOTIFYKIT_FOO_BAR. See docs/cli.md.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the notification service under uvicorn")
    serve.set_defaults(handler=serve_command)
    _setting(serve, "--host", "interface to listen on (0.0.0.0 in a container)")
    _setting(serve, "--port", "TCP port", type=int)
    _jwt_settings(serve)
    _setting(serve, "--jwt-public-key-file", "PEM public key verifying RS*/PS*/ES*/EdDSA tokens")
    _setting(serve, "--jwt-leeway", "seconds of clock skew tolerated on exp/nbf", type=float)
    _setting(serve, "--topics-claim", "token claim listing the topics a client may subscribe to")
    _setting(serve, "--api-key", "key accepted by POST /publish; repeat to rotate", repeat=True)
    _setting(serve, "--allow-origin", "browser Origin allowed to connect; repeat", repeat=True)
    _setting(serve, "--allow-anonymous", "accept clients without a token (broadcasts only)")
    _setting(serve, "--queue-size", "frames queued per connection before 4008", type=int)
    _setting(serve, "--max-frame-bytes", "largest client frame accepted", type=int)
    _setting(serve, "--max-publish-bytes", "largest POST /publish body (413 beyond)", type=int)
    _setting(serve, "--log-level", "log level", choices=LOG_LEVELS)
    _setting(serve, "--redis-url", "Redis URL for propagation across instances (not yet)")
    _setting(serve, "--dev", "development: generate a secret and an API key and print them")

    token = commands.add_parser("token", help="print a signed JWT (HMAC) for a user")
    token.set_defaults(handler=token_command)
    token.add_argument("--user", required=True, help="the user id (the token's subject)")
    token.add_argument("--ttl", type=float, default=3600, help="lifetime in seconds (3600)")
    token.add_argument("--topics", help="comma-separated topic patterns for the topics claim")
    token.add_argument(
        "--claim", action="append", default=[], metavar="K=V", help="extra claim; repeat"
    )
    _jwt_settings(token)
    _setting(token, "--topics-claim", "claim that --topics fills")

    publish = commands.add_parser("publish", help="send a notification through POST /publish")
    publish.set_defaults(handler=publish_command)
    target = publish.add_mutually_exclusive_group(required=True)
    target.add_argument("--user", help="one user id")
    target.add_argument("--users", help="comma-separated user ids")
    target.add_argument("--topic", help="a topic")
    target.add_argument("--authenticated", action="store_true", help="every authenticated client")
    target.add_argument("--broadcast", action="store_true", help="every client")
    publish.add_argument("--event", required=True, help="the event name, e.g. order.shipped")
    publish.add_argument("--data", help="the payload as JSON (default: null)")
    publish.add_argument("--exclude", metavar="CONN", help="connection id not to send it to")
    publish.add_argument("--timeout", type=float, default=10.0, help="seconds (10)")
    _setting(publish, "--url", "base URL of the notifykit service")
    _setting(publish, "--api-key", "the publish API key (the first of a list in the env)")
    return parser


def _jwt_settings(parser: argparse.ArgumentParser) -> None:
    _setting(parser, "--jwt-secret", "shared HMAC secret (32+ bytes for HS256)")
    _setting(parser, "--jwt-algorithm", "allowed JWT algorithm; repeat", repeat=True)
    _setting(parser, "--jwt-audience", "required 'aud' claim")
    _setting(parser, "--jwt-issuer", "required 'iss' claim")
    _setting(parser, "--user-claim", "claim holding the user id")


def _setting(
    parser: argparse.ArgumentParser, flag: str, help: str, *, repeat: bool = False, **kw: Any
) -> None:
    """Add a flag whose default comes from :data:`SETTINGS` (and its environment variable)."""
    dest = flag[2:].replace("-", "_")
    setting = SETTINGS[dest]
    default = f"; default {setting.default}" if setting.default not in (None, (), False) else ""
    help = f"{help} [env {ENV_PREFIX}{dest.upper()}{default}]".replace("%", "%%")
    if setting.kind == "bool":
        parser.add_argument(flag, action="store_true", default=None, help=help)
    else:
        action = "append" if repeat else "store"
        parser.add_argument(flag, action=action, default=None, help=help, **kw)


# --- serve --------------------------------------------------------------------------------


def serve_command(args: argparse.Namespace) -> int:
    """``notifykit serve``: check every setting, then run the service until stopped."""
    check_redis(args)
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UsageError("notifykit serve needs uvicorn: pip install 'notifykit[server]'") from None
    for name in ("queue_size", "max_frame_bytes", "max_publish_bytes"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.dev:
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
    from .hub import Hub

    hub = Hub()
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
    if args.dev:
        print_dev_info(args, authenticator)
    return run_server(app, hub, args)


def check_redis(args: argparse.Namespace) -> None:
    """The place where ``--redis-url`` will choose the Redis propagator; for now it refuses."""
    if args.redis_url:
        raise UsageError(
            "Redis propagation is not supported yet (--redis-url / NOTIFYKIT_REDIS_URL); "
            "run a single instance with the default in-memory propagation"
        )


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
            claims=_claims_for(args, "demo", {args.topics_claim: ["demo:*"]}),
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


def run_server(app: NotifyApp, hub: Hub, args: argparse.Namespace) -> int:
    """Run ``app`` under uvicorn until SIGINT/SIGTERM; returns the exit code."""
    import logging

    import uvicorn

    # notifykit's own loggers print beside uvicorn's, at the same level.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:  %(name)s: %(message)s"))
    logger = logging.getLogger("notifykit")
    logger.addHandler(handler)
    logger.setLevel(args.log_level.upper())
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


# --- token --------------------------------------------------------------------------------


def token_command(args: argparse.Namespace) -> int:
    """``notifykit token``: print only the token, so ``$(notifykit token ...)`` works."""
    if not args.jwt_secret:
        raise UsageError(
            "no JWT secret: pass --jwt-secret or set NOTIFYKIT_JWT_SECRET "
            "(notifykit token signs with HMAC: HS256, HS384 or HS512)"
        )
    extra: dict[str, Any] = {}
    if args.topics is not None:
        extra[args.topics_claim] = [t.strip() for t in args.topics.split(",") if t.strip()]
    for item in args.claim:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--claim {item!r}: expected NAME=VALUE")
        try:
            extra[key] = json.loads(raw)
        except ValueError:
            extra[key] = raw  # not JSON: the plain string
    token = mint_token(
        args.user,
        secret=args.jwt_secret,
        ttl=args.ttl,
        algorithm=(args.jwt_algorithm or ["HS256"])[0],
        claims=_claims_for(args, args.user, extra),
        audience=args.jwt_audience,
        issuer=args.jwt_issuer,
    )
    print(token)
    return 0


def _claims_for(args: argparse.Namespace, user: str, claims: dict[str, Any]) -> dict[str, Any]:
    """``claims`` plus the user id under ``--user-claim`` when that is not ``sub``."""
    if args.user_claim != "sub":
        claims = {**claims, args.user_claim: user}
    return claims


# --- publish ------------------------------------------------------------------------------


def publish_command(args: argparse.Namespace) -> int:
    """``notifykit publish``: POST the notification and print its id."""
    if not args.api_key:
        raise UsageError("no API key: pass --api-key or set NOTIFYKIT_API_KEY")
    body: dict[str, Any] = {"event": args.event}
    if args.data is not None:
        try:
            body["data"] = json.loads(args.data)
        except ValueError as exc:
            raise UsageError(f"--data is not valid JSON: {exc}") from None
    if args.user is not None:
        body["user"] = args.user
    elif args.users is not None:
        body["users"] = [u.strip() for u in args.users.split(",") if u.strip()]
        if not body["users"]:
            raise UsageError("--users needs at least one user id")
    elif args.topic is not None:
        body["topic"] = args.topic
    else:
        body["authenticated" if args.authenticated else "broadcast"] = True
    if args.exclude:
        body["exclude"] = args.exclude
    # A flag gives one key; NOTIFYKIT_API_KEY may hold serve's comma-separated list.
    key = args.api_key if isinstance(args.api_key, str) else args.api_key[0]
    print(post_publish(args.url, key, body, args.timeout))
    return 0


def post_publish(url: str, api_key: str, body: Mapping[str, Any], timeout: float) -> str:
    """POST ``body`` to ``<url>/publish``; return the notification id or raise CommandFailed."""
    endpoint = url.rstrip("/") + "/publish"
    if not endpoint.startswith(("http://", "https://")):
        raise UsageError(f"--url must start with http:// or https://, not {url!r}")
    request = urllib.request.Request(
        endpoint,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise CommandFailed(f"{endpoint} answered {exc.code}: {_server_message(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandFailed(f"cannot reach {endpoint}: {reason}") from None
    except ValueError:
        raise CommandFailed(f"{endpoint} did not answer JSON; is it a notifykit service?") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("id"), str):
        raise CommandFailed(f"{endpoint} answered without a notification id")
    notification_id: str = answer["id"]
    return notification_id


def _server_message(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read())
    except (ValueError, OSError):
        return str(error.reason)
    message = body.get("message") if isinstance(body, dict) else None
    return message if isinstance(message, str) else str(error.reason)
