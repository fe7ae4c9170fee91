"""Connection states of a client, and the changes it reports.

A client goes ``connecting`` → ``open`` → ``closed`` → ``reconnecting`` → ``connecting`` ...
until it ends in ``stopped``. A failed attempt goes ``connecting`` → ``closed`` (code 1006)
directly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ConnectionState", "StateChange"]


class ConnectionState(enum.StrEnum):
    """Where a client is in its connection's life (the same names as the browser client's)."""

    CONNECTING = "connecting"
    """Getting a token and opening a websocket."""
    OPEN = "open"
    """The server sent ``welcome`` and every topic the client keeps is subscribed again."""
    CLOSED = "closed"
    """One connection (or attempt) ended; ``code`` and ``reason`` say why."""
    RECONNECTING = "reconnecting"
    """Waiting ``delay`` seconds before the next attempt."""
    STOPPED = "stopped"
    """The client will not connect again: closed by you, or by a close code that retrying
    cannot fix (``4003``; ``4001`` without a token factory)."""


@dataclass(frozen=True, slots=True)
class StateChange:
    """One state change of a client, with what is known about it."""

    state: ConnectionState
    attempt: int = 0
    """``connecting``/``reconnecting``: attempts since the last connection that opened (0 for
    the first)."""
    code: int | None = None
    """``closed``/``stopped``: the close code; ``1006`` when there was no close frame (the
    network dropped, or no connection was made)."""
    reason: str = ""
    """``closed``/``stopped``: the close reason, or what went wrong."""
    delay: float | None = None
    """``reconnecting``: seconds until the next attempt."""
    recovered: bool | None = None
    """``open``: the server's ``recovered`` flag for the positions the client resumed from:
    ``True`` when nothing was missed, ``False`` when some notifications may be lost (refetch
    what you show); ``None`` when the client had nothing to resume or the server does not
    resume."""
    error: BaseException | None = None
    """``closed``/``stopped``: the exception behind it, if any (a refused connection, a token
    factory that failed...)."""
