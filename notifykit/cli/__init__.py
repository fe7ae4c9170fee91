"""The ``notifykit`` command: ``serve`` the microservice, mint a ``token``, ``publish`` over HTTP.

::

    notifykit serve --dev                                  # generated secret and API key, printed
    notifykit serve --jwt-secret "$SECRET" --api-key "$KEY" --host 0.0.0.0
    notifykit serve ... --redis-url redis://redis:6379/0   # one of N instances sharing a Redis
    notifykit token --user 42 --ttl 3600 --topics 'team:7:*'
    notifykit publish --user 42 --event order.shipped --data '{"id": 7}'

Every setting flag ``--foo-bar`` also reads ``NOTIFYKIT_FOO_BAR`` (repeatable flags: a
comma-separated list; booleans: ``1``/``true``/``yes`` or ``0``/``false``/``no``); a flag given
on the command line wins over the environment. Exit codes: 0 done, 1 failed at run time
(server unreachable or refused the request), 2 bad flags or settings (one line on stderr, never
a traceback), 3 the server could not start (port in use, startup failed). See ``docs/cli.md``.

Modules: :mod:`.settings` (every setting flag, its variable and its checks, read into one
immutable value), :mod:`.serve` and :mod:`.backends` (``serve`` and what it propagates with),
:mod:`.server` (uvicorn: the shutdown sequence and the guards in front of its protocols),
:mod:`.logs` (token redaction), :mod:`.client` (``token`` and ``publish``).
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from .. import __version__
from ..errors import ConfigurationError
from .client import add_publish_parser, add_token_parser
from .serve import add_serve_parser
from .settings import SETTINGS, CommandFailed, Settings, UsageError, read_settings, say_error

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["SETTINGS", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``notifykit`` command line and return its exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = read_settings(args, os.environ)
        handler: Callable[[argparse.Namespace, Settings], int] = args.handler
        return handler(args, settings)
    except (UsageError, ConfigurationError) as exc:
        say_error(str(exc))
        return 2
    except CommandFailed as exc:
        say_error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for ``notifykit`` and its three subcommands."""
    parser = argparse.ArgumentParser(
        prog="notifykit",
        description="Real-time notifications to authenticated users over websockets.",
        epilog="Every setting flag --foo-bar also reads NOTIFYKIT_FOO_BAR. See docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"notifykit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve_parser(commands)
    add_token_parser(commands)
    add_publish_parser(commands)
    return parser
