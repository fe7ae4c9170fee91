"""How long a client waits before it tries to connect again: capped exponential backoff.

Pure arithmetic, no I/O; the browser client (``notifykit/static/client.js``) uses the same
formula, in milliseconds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with "equal jitter", in seconds.

    Before attempt ``n`` (0 for the first retry after a connection ended) the ceiling is
    ``min(maximum, initial * multiplier ** n)``; the delay is drawn uniformly between half the
    ceiling and the ceiling. So a client never waits less than ``initial / 2`` (it cannot
    busy-spin, even against a server that closes every connection at once), successive delays
    never shrink until the cap, and clients that lost the same server spread out instead of
    reconnecting in one burst.
    """

    initial: float = 0.5
    """The first ceiling, in seconds."""
    maximum: float = 30.0
    """The cap of the ceiling, in seconds."""
    multiplier: float = 2.0
    """How much the ceiling grows per failed attempt."""

    def __post_init__(self) -> None:
        if not self.initial > 0:
            raise ConfigurationError(f"backoff initial delay must be > 0, not {self.initial!r}")
        if not self.maximum >= self.initial:
            raise ConfigurationError(
                f"backoff maximum ({self.maximum!r}) must be >= initial ({self.initial!r})"
            )
        if not self.multiplier >= 1:
            raise ConfigurationError(f"backoff multiplier must be >= 1, not {self.multiplier!r}")

    def ceiling(self, attempt: int) -> float:
        """The largest delay before attempt ``attempt`` (0-based)."""
        ceiling = self.initial
        for _ in range(max(0, attempt)):
            ceiling *= self.multiplier
            if ceiling >= self.maximum:
                return self.maximum
        return min(ceiling, self.maximum)

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """A delay before attempt ``attempt``: uniform in ``[ceiling / 2, ceiling]``.

        ``rand`` returns a float in ``[0, 1)``; pass your own to make delays reproducible.
        """
        ceiling = self.ceiling(attempt)
        return ceiling / 2 + ceiling / 2 * rand()
