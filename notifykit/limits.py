"""What a server allows one client, one user and itself, and a log a flood cannot flood.

The gateway enforces every limit (see ``docs/security.md`` for the table of them all); this
module holds the two pieces of bookkeeping they share:

* :class:`ConnectionSlots` counts the connections a gateway serves, in all and per user, and
  refuses one more beyond either bound — a check and an increment with no await between them,
  so that concurrent handshakes cannot all slip through;
* :class:`ThrottledLog` writes a warning for the first occurrence of each kind of violation,
  then at most one line per ``interval`` seconds, saying how many it held back: a client that
  floods the server with violations cannot flood its log. Every occurrence is still counted in
  the hub's metrics.

The inbound rate limit itself (a token bucket per connection) lives in the gateway's reading
loop, as local variables: it is checked for every client frame.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Mapping

__all__ = [
    "DEFAULT_FRAME_BURST",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_DATA_BYTES",
    "DEFAULT_MAX_FRAME_RATE",
    "DEFAULT_MAX_USER_CONNECTIONS",
    "ConnectionSlots",
    "ThrottledLog",
    "at_least",
    "positive_rate",
]

DEFAULT_MAX_CONNECTIONS = 10_000
"""Connections one gateway serves at once; one more is closed with ``1013``."""
DEFAULT_MAX_USER_CONNECTIONS = 100
"""Connections of one user one gateway serves at once; one more is closed with ``4409``."""
DEFAULT_MAX_FRAME_RATE = 50.0
"""Client frames per second one connection may send, on average."""
DEFAULT_FRAME_BURST = 200
"""Client frames one connection may send at once (the token bucket's size): room for a client
that subscribes to its 100 topics (the default ``max_topics``) right after its welcome."""
DEFAULT_MAX_DATA_BYTES = 64 * 1024
"""The largest ``data`` a notification may carry, in bytes of encoded JSON (UTF-8)."""


def at_least(name: str, value: int, minimum: int) -> int:
    """``value`` if it is an integer (not a bool) of at least ``minimum``; else
    :class:`~notifykit.errors.ConfigurationError` naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer of at least {minimum}, not {value!r}")
    return value


def positive_rate(name: str, value: float) -> float:
    """``value`` as a float if it is a finite number above 0; else ConfigurationError."""
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not 0 < value < float("inf")
    ):
        raise ConfigurationError(f"{name} must be a finite number above 0, not {value!r}")
    return float(value)


class ConnectionSlots:
    """The connections a gateway serves: at most ``total`` at once, and at most ``per_user``
    of one user. Anonymous connections count towards ``total`` only."""

    __slots__ = ("_open", "_users", "per_user", "total")

    def __init__(self, total: int, per_user: int) -> None:
        self.total = at_least("max_connections", total, 1)
        self.per_user = at_least("max_user_connections", per_user, 1)
        self._open = 0
        self._users: dict[str, int] = {}

    def take(self) -> bool:
        """Take a slot for a new connection; False (nothing taken) if all ``total`` are
        taken. Give it back with :meth:`give_back`."""
        if self._open >= self.total:
            return False
        self._open += 1
        return True

    def give_back(self) -> None:
        """Give back a slot :meth:`take` returned."""
        self._open -= 1

    def take_user(self, user_id: str) -> bool:
        """Count one more connection of ``user_id``; False (nothing counted) if the user has
        ``per_user`` already. Undo with :meth:`give_back_user`."""
        count = self._users.get(user_id, 0)
        if count >= self.per_user:
            return False
        self._users[user_id] = count + 1
        return True

    def give_back_user(self, user_id: str) -> None:
        """Count one connection of ``user_id`` fewer (a user with none is forgotten)."""
        count = self._users[user_id] - 1
        if count:
            self._users[user_id] = count
        else:
            del self._users[user_id]

    @property
    def open(self) -> int:
        """Connections being served (handshake to close)."""
        return self._open

    def of_user(self, user_id: str) -> int:
        """Connections of ``user_id`` being served."""
        return self._users.get(user_id, 0)

    @property
    def users(self) -> int:
        """Users with at least one connection being served."""
        return len(self._users)


class ThrottledLog:
    """Warnings through ``logger``, at most one per kind every ``interval`` seconds.

    The first occurrence of a kind is written at once; later ones within ``interval`` of the
    last line written are held back and counted, and the next line of that kind says how many
    were. Kinds are a few fixed names, so what it keeps stays small.
    """

    __slots__ = ("_clock", "_held", "_interval", "_last", "_logger")

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(
        self, kind: str, message: str, *args: object, extra: Mapping[str, Any] | None = None
    ) -> None:
        """Log ``message % args`` as a warning (with the fields of ``extra``), unless a line of
        ``kind`` was written less than ``interval`` seconds ago (then it only counts it)."""
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        if held:
            message += " (and %d more like it since the last such line, not logged)"
            args = (*args, held)
        self._logger.warning(message, *args, extra=extra)
