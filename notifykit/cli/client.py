"""``notifykit token`` (mint a JWT) and ``notifykit publish`` (``POST /publish`` over HTTP).

Both need only the core package: ``publish`` speaks HTTP with the standard library's ``urllib``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from ..jwt import mint_token
from .settings import CommandFailed, UsageError, add_settings

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping

    from .settings import Settings

__all__ = [
    "add_publish_parser",
    "add_token_parser",
    "claims_for",
    "post_publish",
    "publish_command",
    "token_command",
]

_CLAIM_FLAGS = {
    "sub": "--user",
    "iat": "--ttl",
    "exp": "--ttl",
    "aud": "--jwt-audience",
    "iss": "--jwt-issuer",
}
"""The claims ``token`` sets from its own flags, which ``--claim`` may not set."""


# --- token --------------------------------------------------------------------------------


def add_token_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``token`` subcommand."""
    token = commands.add_parser("token", help="print a signed JWT (HMAC) for a user")
    token.set_defaults(handler=token_command)
    token.add_argument("--user", required=True, help="the user id (the token's subject)")
    token.add_argument("--ttl", type=float, default=3600, help="lifetime in seconds (3600)")
    token.add_argument("--topics", help="comma-separated topic patterns for the topics claim")
    token.add_argument(
        "--claim", action="append", default=[], metavar="K=V", help="extra claim; repeat"
    )
    add_settings(token, "token")


def token_command(args: argparse.Namespace, settings: Settings) -> int:
    """``notifykit token``: print only the token, so ``$(notifykit token ...)`` works."""
    if not settings.jwt_secret:
        raise UsageError(
            "no JWT secret: pass --jwt-secret or set NOTIFYKIT_JWT_SECRET "
            "(notifykit token signs with HMAC: HS256, HS384 or HS512)"
        )
    extra: dict[str, Any] = {}
    if args.topics is not None:
        extra[settings.topics_claim] = [t.strip() for t in args.topics.split(",") if t.strip()]
    for item in args.claim:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--claim {item!r}: expected NAME=VALUE")
        if key in _CLAIM_FLAGS:
            raise UsageError(f"--claim {key}: set {key!r} with {_CLAIM_FLAGS[key]}")
        try:
            extra[key] = json.loads(raw)
        except ValueError:
            extra[key] = raw  # not JSON: the plain string
    token = mint_token(
        args.user,
        secret=settings.jwt_secret,
        ttl=args.ttl,
        algorithm=(settings.jwt_algorithm or ("HS256",))[0],
        claims=claims_for(settings, args.user, extra),
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    print(token)
    return 0


def claims_for(settings: Settings, user: str, claims: dict[str, Any]) -> dict[str, Any]:
    """``claims`` plus the user id under ``--user-claim`` when that is not ``sub``."""
    if settings.user_claim != "sub":
        claims = {**claims, settings.user_claim: user}
    return claims


# --- publish ------------------------------------------------------------------------------


def add_publish_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``publish`` subcommand."""
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
    add_settings(publish, "publish")


def publish_command(args: argparse.Namespace, settings: Settings) -> int:
    """``notifykit publish``: POST the notification and print its id."""
    if not settings.api_key:
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
    # NOTIFYKIT_API_KEY may hold serve's comma-separated list: publish uses the first key.
    print(post_publish(settings.url, settings.api_key[0], body, args.timeout))
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
