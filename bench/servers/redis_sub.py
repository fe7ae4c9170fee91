"""The raw baselines' Redis subscriber: one low-level redis-py connection speaking RESP2.

Like notifykit's own subscriber it bypasses redis-py's ``PubSub`` helper (its per-message
retry/health/dict machinery) and reads replies straight from the connection's hiredis parser,
so the baselines are not slowed by a layer notifykit does not use.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.connection import Connection, parse_url


async def open_subscriber(url: str) -> Any:
    """A connected RESP2 connection for ``SUBSCRIBE`` and reading messages."""
    options = parse_url(url)
    options.pop("connection_class", None)
    # No socket timeout: an idle subscriber blocks in read until a message comes.
    options["socket_timeout"] = None
    connection = Connection(**options, protocol=2)
    await connection.connect()
    return connection
