"""Collect what a user would receive, for unit tests of code that sends notifications.

::

    from notifykit import Hub
    from notifykit.testing import inbox

    async def test_shipping_notifies_the_buyer():
        async with Hub() as hub, inbox(hub, user="42") as box:
            await ship_order(hub, order_id=7)            # the code under test
            note = await box.next()
            assert note.event == "order.shipped"
            assert note.data == {"order": 7}

An inbox is registered with the hub exactly as a websocket connection is (same routing, same
frames), so what it collects is what that user's browser would receive.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio

from ..connection import Connection
from ..model import Principal
from ..wire import Notification, parse_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Mapping
    from typing import Any

    from ..hub import Hub

__all__ = ["Inbox", "inbox"]


class Inbox:
    """The notifications one simulated connection received, in order."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.received: list[Notification] = []
        self._taken = 0

    @property
    def connection_id(self) -> str:
        """The simulated connection's id (what ``exclude=`` takes)."""
        return self.connection.id

    def _drain(self) -> None:
        while True:
            try:
                frame = self.connection.outbox.receive_nowait()
            except anyio.WouldBlock:
                return
            parsed = parse_server(frame)
            if isinstance(parsed, Notification):
                self.received.append(parsed)

    @property
    def notifications(self) -> list[Notification]:
        """Everything received so far (without waiting)."""
        self._drain()
        return list(self.received)

    @property
    def events(self) -> list[str]:
        """The ``event`` of everything received so far."""
        return [n.event for n in self.notifications]

    async def next(self, timeout: float = 1.0) -> Notification:  # noqa: ASYNC109
        """Wait up to ``timeout`` seconds for the next notification not yet taken by ``next``.

        Raises ``TimeoutError`` if none arrives.
        """
        taken = self._taken
        with anyio.fail_after(timeout):
            while True:
                self._drain()
                if len(self.received) > taken:
                    self._taken = taken + 1
                    return self.received[taken]
                frame = await self.connection.outbox.receive()
                parsed = parse_server(frame)
                if isinstance(parsed, Notification):
                    self.received.append(parsed)

    async def assert_nothing(self, wait: float = 0.05) -> None:
        """Raise ``AssertionError`` if anything arrives within ``wait`` seconds."""
        await anyio.sleep(wait)
        if self.notifications[self._taken :]:
            raise AssertionError(f"expected no notification, got {self.events}")


@asynccontextmanager
async def inbox(
    hub: Hub,
    user: str | None,
    *,
    topics: Iterable[str] = (),
    claims: Mapping[str, Any] | None = None,
    queue_size: int = 10_000,
) -> AsyncIterator[Inbox]:
    """Register a simulated connection for ``user`` (``None``: anonymous) on a running hub,
    subscribed to ``topics`` (no authorization check: tests decide), and yield its
    :class:`Inbox`. It is unregistered on exit."""
    connection = Connection(Principal(user, claims or {}), queue_size=queue_size)
    await hub.attach(connection)
    try:
        for topic in topics:
            await hub.subscribe(connection, topic)
        yield Inbox(connection)
    finally:
        await hub.detach(connection)
        connection.release()
