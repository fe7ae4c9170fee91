"""One programmatic uvicorn runner for every ASGI variant, so they share one serving stack:
uvloop, httptools, uvicorn's websockets-sansio implementation (or the one asked for), no access
log."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import uvicorn

from ..common import raise_fd_limit

WS_IMPLEMENTATIONS = ("websockets-sansio", "websockets", "wsproto")
"""uvicorn's websocket implementations (``--ws``)."""


def run(app: Any, port: int, ws: str = "websockets-sansio", backlog: int = 4096) -> None:
    """Serve ``app`` on 127.0.0.1:``port`` until SIGINT/SIGTERM."""
    raise_fd_limit()
    logging.basicConfig(level=logging.WARNING)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        ws=ws,
        lifespan="on",
        log_level="warning",
        access_log=False,
        backlog=backlog,
    )
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it handled
        uvicorn.Server(config).run()
