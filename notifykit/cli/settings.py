"""The settings table: every flag that can also come from ``NOTIFYKIT_<NAME>``, and how to read it.

A subcommand adds a setting flag with :func:`add_setting`; :func:`read_environment` then fills
every setting the command line did not give from the environment, else from its default. The two
exceptions the commands raise to end with a one-line message live here too.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_PRESENCE_TTL",
    "DEFAULT_REDIS_PREFIX",
    "ENV_PREFIX",
    "LOG_LEVELS",
    "SETTINGS",
    "CommandFailed",
    "Setting",
    "UsageError",
    "add_setting",
    "read_environment",
    "say_error",
]

ENV_PREFIX = "NOTIFYKIT_"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
DEFAULT_REDIS_PREFIX = "notifykit"
"""The Redis channel and key prefix when ``--redis-prefix`` is not given."""
DEFAULT_PRESENCE_TTL = 30.0
"""Seconds a crashed instance's users stay online when ``--presence-ttl`` is not given."""


class Setting(NamedTuple):
    """A flag that can also come from ``NOTIFYKIT_<DEST>``: how to read it, and its default.

    ``shown`` is the default as ``--help`` states it, for settings whose value is resolved
    later (a ``None`` default that means "generated", or "only with Redis").
    """

    kind: str  # "str", "int", "float", "bool" or "list"
    default: Any
    shown: str | None = None


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
    "redis_cluster_url": Setting("str", None),
    "redis_prefix": Setting("str", None, DEFAULT_REDIS_PREFIX),
    "presence_ttl": Setting("float", None, f"{DEFAULT_PRESENCE_TTL:g}"),
    "instance_id": Setting("str", None, "generated: <hostname>-<pid>-<random>"),
    "dev": Setting("bool", False),
    "demo": Setting("bool", False),
    "url": Setting("str", "http://127.0.0.1:8000"),
}
"""Every setting flag by ``argparse`` dest; its environment variable is ``NOTIFYKIT_`` + DEST."""


class UsageError(Exception):
    """Bad flags or settings: reported in one line, exit code 2."""


class CommandFailed(Exception):
    """The command ran but failed (server unreachable, request refused): exit code 1."""


def add_setting(
    parser: argparse.ArgumentParser, flag: str, help: str, *, repeat: bool = False, **kw: Any
) -> None:
    """Add a flag whose default comes from :data:`SETTINGS` (and its environment variable)."""
    dest = flag[2:].replace("-", "_")
    setting = SETTINGS[dest]
    shown = setting.shown
    if shown is None and setting.default not in (None, (), False):
        shown = str(setting.default)
    default = f"; default {shown}" if shown is not None else ""
    help = f"{help} [env {ENV_PREFIX}{dest.upper()}{default}]".replace("%", "%%")
    if setting.kind == "bool":
        parser.add_argument(flag, action="store_true", default=None, help=help)
    else:
        action = "append" if repeat else "store"
        parser.add_argument(flag, action=action, default=None, help=help, **kw)


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


def say_error(message: str) -> None:
    """Print ``notifykit: error: <message>`` on stderr, on one line."""
    print(f"notifykit: error: {' '.join(message.split())}", file=sys.stderr)
