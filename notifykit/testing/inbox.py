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
    """The notifications one simulated connection received, in order.

    ``next()`` takes them one at a time, waiting for each; ``notifications`` and ``events``
    show everything received so far without waiting and without taking anything.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.received: list[Notification] = []
        """Every notification received so far, in order (``notifications`` drains first)."""
        self._taken = 0
        self._closed = False

    @property
    def connection_id(self) -> str:
        """The simulated connection's id (what ``exclude=`` takes)."""
        return self.connection.id

    def _keep(self, frame: str) -> None:
        parsed = parse_server(frame)
        if isinstance(parsed, Notification):
            self.received.append(parsed)

    def _drain(self, *, check: bool = True) -> None:
        if not self._closed:
            while True:
                try:
                    frame = self.connection.outbox.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                self._keep(frame)
        if check and self.connection.close_code is not None:
            raise AssertionError(
                f"the inbox overflowed ({self.connection.close_reason}): more notifications "
                "arrived than its queue_size holds; read them as they come or raise queue_size"
            )

    def _close(self) -> None:
        """Keep what is still queued; called when the inbox is unregistered."""
        self._drain(check=False)
        self._closed = True

    @property
    def notifications(self) -> list[Notification]:
        """Everything received so far (without waiting), whether ``next`` took it or not."""
        self._drain()
        return list(self.received)

    @property
    def events(self) -> list[str]:
        """The ``event`` of everything received so far."""
        return [n.event for n in self.notifications]

    async def next(self, timeout: float = 1.0) -> Notification:  # noqa: ASYNC109
        """The first notification ``next`` has not returned yet, waiting up to ``timeout``
        seconds for it to arrive.

        Raises ``TimeoutError`` if none arrives in time (at once if the inbox is closed).
        """
        taken = self._taken
        try:
            with anyio.fail_after(timeout):
                while True:
                    self._drain()
                    if len(self.received) > taken:
                        self._taken = taken + 1
                        return self.received[taken]
                    if self._closed:
                        break
                    self._keep(await self.connection.outbox.receive())
        except TimeoutError:
            pass
        closed = " (the inbox is closed)" if self._closed else ""
        raise TimeoutError(f"no notification arrived within {timeout} s{closed}")

    async def assert_nothing(self, wait: float = 0.05) -> None:
        """Wait ``wait`` seconds, then raise ``AssertionError`` if the inbox holds any
        notification that ``next`` has not returned.

        The in-memory propagator delivers before ``notify_*`` returns; ``wait`` gives other
        propagators time to deliver what should not arrive.
        """
        await anyio.sleep(wait)
        unexpected = self.notifications[self._taken :]
        if unexpected:
            raise AssertionError(
                f"expected no notification, got {[n.event for n in unexpected]}: {unexpected}"
            )


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
    box = Inbox(connection)
    try:
        await hub.attach(connection)
        for topic in topics:
            await hub.subscribe(connection, topic)
        yield box
    finally:
        await hub.detach(connection)
        box._close()
        connection.release()
