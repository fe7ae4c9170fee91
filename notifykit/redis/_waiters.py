"""Callers of ``subscribe()`` waiting for Redis to confirm their channels.

One :class:`Waiter` per ``subscribe()`` call, counting the channels still unconfirmed; the
:class:`Waiters` registry finds them by channel. A caller that is cancelled (the hub's timeout)
cancels only its own future, never a subscription other callers wait on.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..errors import PropagationError

__all__ = ["Waiter", "Waiters"]


class Waiter:
    """One ``subscribe()`` call waiting for ``remaining`` channels."""

    __slots__ = ("future", "remaining")

    def __init__(self) -> None:
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.remaining = 0

    def channel_done(self) -> None:
        """One of its channels is confirmed (or no longer wanted)."""
        self.remaining -= 1
        if self.remaining <= 0 and not self.future.done():
            self.future.set_result(None)

    def fail(self, error: PropagationError) -> None:
        """End the wait with ``error``, unless it already ended."""
        if not self.future.done():
            self.future.set_exception(error)

    async def wait(self) -> None:
        """Return once every channel is confirmed; raise the error given to :meth:`fail`."""
        await self.future


class Waiters:
    """Which waiters wait on which channel."""

    __slots__ = ("_by_channel",)

    def __init__(self) -> None:
        self._by_channel: dict[bytes, list[Waiter]] = {}

    def add(self, channel: bytes, waiter: Waiter) -> None:
        """Make ``waiter`` wait for ``channel`` too."""
        waiter.remaining += 1
        waiting = self._by_channel.get(channel)
        if waiting is None:
            self._by_channel[channel] = [waiter]
        else:
            waiting.append(waiter)

    def release(self, channel: bytes) -> None:
        """``channel`` is confirmed, or no longer wanted: its waiters stop waiting for it."""
        waiting = self._by_channel.pop(channel, None)
        if waiting is not None:
            for waiter in waiting:
                waiter.channel_done()

    def fail(self, channel: bytes, error: Callable[[], PropagationError]) -> None:
        """``channel`` cannot be subscribed: its waiters raise ``error()``."""
        waiting = self._by_channel.pop(channel, None)
        if waiting is not None:
            for waiter in waiting:
                waiter.fail(error())

    def fail_all(self, error: Callable[[], PropagationError]) -> None:
        """Every waiter raises ``error()`` (the propagator is closing)."""
        by_channel, self._by_channel = self._by_channel, {}
        for waiting in by_channel.values():
            for waiter in waiting:
                waiter.fail(error())

    def __len__(self) -> int:
        return len(self._by_channel)
