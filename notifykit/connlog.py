"""Log lines about connections, each naming the connection and its user twice: in the message
text, and as ``extra`` fields (``connection_id``, ``user_id``...) that a structured formatter
(``notifykit serve --log-format json``) writes as fields of their own.

No line holds a token, an API key or a notification's data: only ids, close codes and the
reasons the gateway gives clients (which never echo a token). ``notifykit serve`` also redacts
whatever a library it runs on might log (see :mod:`notifykit.cli.logs`).

Levels: a connection opening, closing normally and refreshing its token are ``DEBUG`` (one
line each per connection: the metrics count them); a refused handshake, a refused refresh
and an unusual close are ``INFO``; what an operator must look at stays ``WARNING``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .wire import CloseCode

if TYPE_CHECKING:
    from .connection import Connection

__all__ = [
    "log_closed",
    "log_fields",
    "log_opened",
    "log_refresh_refused",
    "log_refreshed",
    "log_refused",
]

logger = logging.getLogger("notifykit.gateway")

_ORDINARY = frozenset({None, CloseCode.NORMAL, CloseCode.GOING_AWAY})
"""Ends that are part of a connection's normal life: the client left, 1000, 1001."""


def log_fields(connection: Connection, **more: Any) -> dict[str, Any]:
    """The ``extra`` of a log line about ``connection``: its ``connection_id`` and
    ``user_id`` (None for an anonymous one), and ``more``."""
    return {"connection_id": connection.id, "user_id": connection.principal.user_id, **more}


def log_opened(connection: Connection, client: str | None) -> None:
    """Log a connection accepted and about to register."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "connection %s of user %r opened from %s",
            connection.id,
            connection.principal.user_id,
            client or "an unknown address",
            extra=log_fields(connection, client=client),
        )


def log_closed(connection: Connection) -> None:
    """Log the end of a connection: its close code and reason, or that the client left."""
    code = connection.close_code
    level = logging.DEBUG if code in _ORDINARY else logging.INFO
    if not logger.isEnabledFor(level):
        return
    how = "by the client" if code is None else f"with {code} {connection.close_reason!r}"
    logger.log(
        level,
        "connection %s of user %r closed %s",
        connection.id,
        connection.principal.user_id,
        how,
        extra=log_fields(connection, close_code=code, reason=connection.close_reason or None),
    )


def log_refused(code: int, reason: str, client: str | None) -> None:
    """Log a handshake refused with ``code`` (4001, 4003, 4400, 1013) and ``reason``."""
    logger.info(
        "refused a connection from %s: %d %s",
        client or "an unknown address",
        code,
        reason,
        extra={"close_code": code, "reason": reason, "client": client},
    )


def log_refreshed(connection: Connection) -> None:
    """Log a connection's token replaced by an in-band refresh."""
    logger.debug(
        "connection %s of user %r refreshed its token (expires at %s)",
        connection.id,
        connection.principal.user_id,
        connection.principal.expires_at,
        extra=log_fields(connection, expires_at=connection.principal.expires_at),
    )


def log_refresh_refused(connection: Connection, reason: str) -> None:
    """Log an in-band refresh refused for ``reason``."""
    logger.info(
        "connection %s of user %r: refresh refused: %s",
        connection.id,
        connection.principal.user_id,
        reason,
        extra=log_fields(connection, reason=reason),
    )
