"""Every setting of the ``notifykit`` command: its flag, its ``NOTIFYKIT_*`` variable, its checks.

:data:`SETTINGS` is the one table of setting flags; :func:`add_settings` puts a command's flags on
its parser, and :func:`read_settings` reads the parsed flags, else the environment, else the
defaults, into one immutable :class:`Settings` value, checking each on the way (nothing here
mutates the parsed arguments). Flags that belong to one invocation only (``token --user``,
``publish --event``...) stay with their command. The two exceptions the commands raise to end
with a one-line message live here too.
"""

from __future__ import annotations

import ipaddress
import math
import socket
import sys
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, NamedTuple

from ..limits import (
    DEFAULT_FRAME_BURST,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_DATA_BYTES,
    DEFAULT_MAX_FRAME_RATE,
    DEFAULT_MAX_USER_CONNECTIONS,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_PRESENCE_TTL",
    "DEFAULT_REDIS_PREFIX",
    "ENV_PREFIX",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "SETTINGS",
    "CommandFailed",
    "Setting",
    "Settings",
    "UsageError",
    "add_settings",
    "read_settings",
    "say_error",
]

ENV_PREFIX = "NOTIFYKIT_"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
LOG_FORMATS = ("text", "json")
DEFAULT_REDIS_PREFIX = "notifykit"
"""The Redis channel and key prefix when ``--redis-prefix`` is not given."""
DEFAULT_PRESENCE_TTL = 30.0
"""Seconds a crashed instance's users stay online when ``--presence-ttl`` is not given."""

_SERVE = frozenset({"serve"})
_JWT = frozenset({"serve", "token"})


class Setting(NamedTuple):
    """A flag that can also come from ``NOTIFYKIT_<DEST>``.

    ``kind`` says how its text is read (``str``, ``int``, ``float``, ``bool``; ``list`` for a
    repeatable flag, comma-separated in the environment); ``minimum`` is the smallest value a
    number may take (``exclusive``: it must be above it); ``shown`` is the default as ``--help``
    states it when the value is resolved later ("generated", "only with Redis").
    """

    kind: str
    default: Any
    help: str
    commands: frozenset[str] = _SERVE
    shown: str | None = None
    minimum: float | None = None
    exclusive: bool = False


SETTINGS: Mapping[str, Setting] = {
    "host": Setting("str", "127.0.0.1", "interface to listen on (0.0.0.0 in a container)"),
    "port": Setting("int", 8000, "TCP port (1 to 65535)", minimum=1),
    "jwt_secret": Setting("str", None, "shared HMAC secret (32+ bytes for HS256)", _JWT),
    "jwt_public_key_file": Setting(
        "str", None, "PEM public key verifying RS*/PS*/ES*/EdDSA tokens"
    ),
    "jwt_algorithm": Setting(
        "list",
        (),
        "JWT algorithm; repeat (serve: allowed ones, default HS256 or RS256 with a public key; "
        "token: signs with the first, default HS256)",
        _JWT,
    ),
    "jwt_audience": Setting("str", None, "the 'aud' claim (serve: required in tokens)", _JWT),
    "jwt_issuer": Setting("str", None, "the 'iss' claim (serve: required in tokens)", _JWT),
    "jwt_leeway": Setting(
        "float", 0.0, "seconds of clock skew tolerated on exp, nbf and iat", minimum=0
    ),
    "user_claim": Setting("str", "sub", "claim holding the user id", _JWT),
    "topics_claim": Setting(
        "str", "topics", "claim listing the topics a client may subscribe to", _JWT
    ),
    "api_key": Setting(
        "list",
        (),
        "publish API key (serve: accepted by POST /publish, repeat to rotate; publish: the first)",
        frozenset({"serve", "publish"}),
    ),
    "allow_origin": Setting("list", (), "browser Origin allowed to connect; repeat"),
    "allow_anonymous": Setting("bool", False, "accept clients without a token (broadcasts only)"),
    "queue_size": Setting("int", 256, "frames queued per connection before 4008", minimum=1),
    "queue_bytes": Setting(
        "int", 1024 * 1024, "bytes queued per connection before 4008", minimum=1
    ),
    "max_frame_bytes": Setting("int", 64 * 1024, "largest client frame accepted", minimum=1),
    "max_publish_bytes": Setting(
        "int", 1024 * 1024, "largest POST /publish body (413 beyond)", minimum=1
    ),
    "max_data_bytes": Setting(
        "int",
        DEFAULT_MAX_DATA_BYTES,
        "largest notification data, in bytes of JSON (400 / InvalidNotification beyond)",
        minimum=4,
    ),
    "max_connections": Setting(
        "int",
        DEFAULT_MAX_CONNECTIONS,
        "websocket connections served at once (1013 beyond)",
        minimum=1,
    ),
    "max_user_connections": Setting(
        "int",
        DEFAULT_MAX_USER_CONNECTIONS,
        "websocket connections of one user served at once (4409 beyond)",
        minimum=1,
    ),
    "max_frame_rate": Setting(
        "float",
        DEFAULT_MAX_FRAME_RATE,
        "client frames per second per connection (rate_limited errors, then 4429, beyond)",
        minimum=0,
        exclusive=True,
    ),
    "frame_burst": Setting(
        "int", DEFAULT_FRAME_BURST, "client frames a connection may send at once", minimum=1
    ),
    "close_timeout": Setting(
        "float",
        5.0,
        "seconds a connection's last frames and close frame may take before its socket is dropped",
        minimum=0,
        exclusive=True,
    ),
    "shutdown_timeout": Setting(
        "float",
        5.0,
        "seconds a shutdown waits for clients to leave after 1001 (and for HTTP requests)",
        minimum=0,
        exclusive=True,
    ),
    "header_timeout": Setting(
        "float",
        10.0,
        "seconds a client has to send a complete HTTP request head (408 beyond)",
        minimum=0,
        exclusive=True,
    ),
    "log_level": Setting("str", "info", "log level"),
    "log_format": Setting("str", "text", "log lines: text, or json (one object per line)"),
    "redis_url": Setting("str", None, "Redis URL: propagation and presence across instances"),
    "redis_cluster_url": Setting("str", None, "any node of a Redis Cluster (sharded pub/sub)"),
    "redis_prefix": Setting(
        "str", None, "channel and key prefix, to share one Redis", shown=DEFAULT_REDIS_PREFIX
    ),
    "presence_ttl": Setting(
        "float",
        None,
        "seconds a crashed instance's users stay online",
        shown=f"{DEFAULT_PRESENCE_TTL:g}",
        minimum=0,
        exclusive=True,
    ),
    "history_size": Setting(
        "int",
        100,
        "notifications kept per stream for resume and GET /history (0: no history)",
        minimum=0,
    ),
    "history_ttl": Setting(
        "float",
        3600.0,
        "seconds a notification (and an idle stream) is kept in history",
        minimum=0,
        exclusive=True,
    ),
    "instance_id": Setting(
        "str",
        None,
        "this instance's name in presence, logs and Redis",
        shown="generated: <hostname>-<pid>-<random>",
    ),
    "dev": Setting("bool", False, "development: generate a secret and an API key and print them"),
    "demo": Setting(
        "bool", False, "development: a demo page at /demo that mints tokens (implies --dev's keys)"
    ),
    "url": Setting(
        "str", "http://127.0.0.1:8000", "base URL of the notifykit service", frozenset({"publish"})
    ),
}
"""Every setting flag by ``argparse`` dest; its environment variable is ``NOTIFYKIT_`` + DEST."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting, read and checked; a command reads the ones it has flags for (the others
    keep their defaults). Repeatable settings are tuples."""

    host: str = "127.0.0.1"
    port: int = 8000
    jwt_secret: str | None = None
    jwt_public_key_file: str | None = None
    jwt_algorithm: tuple[str, ...] = ()
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway: float = 0.0
    user_claim: str = "sub"
    topics_claim: str = "topics"
    api_key: tuple[str, ...] = ()
    allow_origin: tuple[str, ...] = ()
    allow_anonymous: bool = False
    queue_size: int = 256
    queue_bytes: int = 1024 * 1024
    max_frame_bytes: int = 64 * 1024
    max_publish_bytes: int = 1024 * 1024
    max_data_bytes: int = DEFAULT_MAX_DATA_BYTES
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_user_connections: int = DEFAULT_MAX_USER_CONNECTIONS
    max_frame_rate: float = DEFAULT_MAX_FRAME_RATE
    frame_burst: int = DEFAULT_FRAME_BURST
    close_timeout: float = 5.0
    shutdown_timeout: float = 5.0
    header_timeout: float = 10.0
    log_level: str = "info"
    log_format: str = "text"
    redis_url: str | None = None
    redis_cluster_url: str | None = None
    redis_prefix: str | None = None
    presence_ttl: float | None = None
    history_size: int = 100
    history_ttl: float = 3600.0
    instance_id: str | None = None
    dev: bool = False
    demo: bool = False
    url: str = "http://127.0.0.1:8000"


class UsageError(Exception):
    """Bad flags or settings: reported in one line, exit code 2."""


class CommandFailed(Exception):
    """The command ran but failed (server unreachable, request refused): exit code 1."""


def add_settings(parser: argparse.ArgumentParser, command: str) -> None:
    """Add the flag of every setting ``command`` uses to its parser (all read as text, so that
    a flag and its environment variable are checked by the same code)."""
    for dest, setting in SETTINGS.items():
        if command not in setting.commands:
            continue
        flag = "--" + dest.replace("_", "-")
        shown = setting.shown
        if shown is None and setting.default not in (None, (), False):
            shown = str(setting.default)
        default = f"; default {shown}" if shown is not None else ""
        help = f"{setting.help} [env {ENV_PREFIX}{dest.upper()}{default}]".replace("%", "%%")
        if setting.kind == "bool":
            parser.add_argument(flag, action="store_true", default=None, help=help)
        elif dest == "log_level":
            parser.add_argument(flag, default=None, choices=LOG_LEVELS, help=help)
        elif dest == "log_format":
            parser.add_argument(flag, default=None, choices=LOG_FORMATS, help=help)
        else:
            action = "append" if setting.kind == "list" else "store"
            parser.add_argument(flag, action=action, default=None, help=help)


def read_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """The settings of the command ``args`` was parsed for: each from its flag, else from its
    ``NOTIFYKIT_*`` variable (an empty one counts as unset), else its default; raises
    :class:`UsageError` naming the flag or variable of the first unusable one."""
    values: dict[str, Any] = {}
    for dest, setting in SETTINGS.items():
        given = getattr(args, dest, None)
        flag = "--" + dest.replace("_", "-")
        if given is not None:
            where = f"{flag} {given!r}" if isinstance(given, str) else flag
            values[dest] = _convert(where, setting, given)
            continue
        name = ENV_PREFIX + dest.upper()
        raw = environ.get(name, "").strip() if hasattr(args, dest) else ""
        if raw:
            values[dest] = _convert(f"{name}={raw!r}", setting, raw)
    if values.get("log_level", "info") not in LOG_LEVELS:
        raise UsageError(f"log level must be one of {', '.join(LOG_LEVELS)}")
    if values.get("log_format", "text") not in LOG_FORMATS:
        raise UsageError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    settings = Settings(**{f.name: values[f.name] for f in fields(Settings) if f.name in values})
    if getattr(args, "command", None) == "serve":
        check_listen_address(settings.host, settings.port)
    return settings


def check_listen_address(host: str, port: int) -> None:
    """Refuse a ``--host`` that is neither an IP address nor a name that resolves, and a
    ``--port`` outside 1-65535, before anything starts (uvicorn would otherwise fail after its
    banner, or listen on another port than the one it prints)."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port}: a TCP port is 1 to 65535")
    if not host:
        raise UsageError("--host is empty: give an IP address (0.0.0.0 for every interface)")
    if _looks_numeric(host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise UsageError(f"--host {host!r} is not a valid IP address") from None
        return
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UsageError(
            f"--host {host!r} is not an IP address or a known host name: {exc}"
        ) from None


def _looks_numeric(host: str) -> bool:
    """An IPv6 literal, or a dotted string of digits (which no resolver should treat as a
    name: ``999.1.1.1`` is a bad address, not a host to look up)."""
    return ":" in host or all(part.isdigit() for part in host.split("."))


def _convert(where: str, setting: Setting, value: str | list[str] | bool) -> Any:
    """``value`` (a flag's text, a repeated flag's list, a store_true, or an environment
    variable's text) as the setting's kind, checked against its minimum."""
    kind = setting.kind
    if kind == "bool" and isinstance(value, str):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{where}: expected 1/true/yes or 0/false/no")
    if kind == "bool":
        return value is True
    if kind == "list":
        items = value if isinstance(value, list) else str(value).split(",")
        return tuple(item.strip() for item in items if item.strip())
    if not isinstance(value, str):  # pragma: no cover - argparse gives text for the rest
        raise TypeError(f"{where}: unexpected {value!r}")
    if kind == "str":
        return value
    try:
        number: float = int(value) if kind == "int" else float(value)
    except ValueError:
        raise UsageError(f"{where}: expected a{'n' if kind == 'int' else ''} {kind}") from None
    low = setting.minimum
    if not math.isfinite(number) or (
        low is not None and (number <= low if setting.exclusive else number < low)
    ):
        limit = "" if low is None else f" {'above' if setting.exclusive else 'at least'} {low:g}"
        raise UsageError(f"{where}: expected a finite number{limit}")
    return number


def say_error(message: str) -> None:
    """Print ``notifykit: error: <message>`` on stderr, on one line."""
    print(f"notifykit: error: {' '.join(message.split())}", file=sys.stderr)
