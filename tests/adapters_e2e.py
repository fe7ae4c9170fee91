"""Every adapter as a real server process, configured alike, for the shared contract suite.

Each adapter serves one test app from tests/apps (``contract_asgi.py`` under uvicorn,
``contract_websockets.py`` on a plain ``websockets`` server, ``contract_django/`` under Channels
and uvicorn), all built by ``contract_config.py`` from the same environment: one JWT secret, one
Redis and channel prefix, one allowed origin, the same frame and queue limits. Tests publish
through that Redis from their own process, so every adapter is driven the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from servers_e2e import SECRET, Server, clean_env, start_command

APPS = Path(__file__).resolve().parent / "apps"
ORIGIN = "https://app.example"
MAX_FRAME = 1024
"""Client frames above this get a ``frame_too_large`` error frame..."""
WS_MAX = 4 * MAX_FRAME
"""...and above this the websocket layer closes the connection with 1009."""
QUEUE_SIZE = 16
CLOSE_TIMEOUT = 1.0


def _uvicorn(app: str) -> Callable[[int], Sequence[str]]:
    return lambda port: [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--app-dir",
        str(APPS),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--lifespan",
        "on",
        "--ws",
        "websockets-sansio",
        "--ws-max-size",
        str(WS_MAX),
        "--ws-per-message-deflate",
        "false",
        "--log-level",
        "warning",
    ]


@dataclass(frozen=True)
class Adapter:
    """One adapter under test: how to start its server, and what it answers a SIGTERM with."""

    name: str
    argv: Callable[[int], Sequence[str]]
    shutdown_code: int
    """The close code clients get when the server is stopped: 1001 (going away) where
    notifykit closes them; 1012 (service restart) where uvicorn closes every websocket
    itself before the application's lifespan shutdown runs. Both mean "reconnect"."""

    def start(self, redis_url: str, prefix: str) -> Server:
        """Start this adapter's server on ``redis_url`` and wait until it is healthy."""
        env = clean_env(
            NK_SECRET=SECRET,
            NK_REDIS_URL=redis_url,
            NK_PREFIX=prefix,
            NK_ORIGIN=ORIGIN,
            NK_MAX_FRAME=str(MAX_FRAME),
            NK_QUEUE_SIZE=str(QUEUE_SIZE),
            NK_CLOSE_TIMEOUT=str(CLOSE_TIMEOUT),
            PYTHONPATH=str(APPS),
        )
        return start_command(self.argv, env=env, health_path="/healthz")


ADAPTERS = {
    adapter.name: adapter
    for adapter in (
        Adapter("asgi", _uvicorn("contract_asgi:app"), shutdown_code=1012),
        Adapter(
            "websockets",
            lambda port: [sys.executable, str(APPS / "contract_websockets.py"), str(port)],
            shutdown_code=1001,
        ),
        Adapter("channels", _uvicorn("contract_django.asgi:application"), shutdown_code=1012),
    )
}
