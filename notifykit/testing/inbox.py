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
from ..wire import CloseCode, Notification, parse_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Mapping
    from typing import Any

    from ..hub import Hub

__all__ = ["Inbox", "inbox"]


class Inbox:
    """The notifications one simulated connection received, in order.

    ``next()`` takes them one at a time, waiting for each; ``notifications`` and ``events``
    show everything received so far without waiting and without taking anything. It is the
    connection's transport: frames reach it exactly as they would reach a websocket.
    """

    def __init__(self, connection: Connection, capacity: int) -> None:
        self.connection = connection
        self.received: list[Notification] = []
        """Every notification received so far, in order."""
        self._capacity = capacity
        self._taken = 0
        self._closed = False
        self._arrived = anyio.Event()

    @property
    def connection_id(self) -> str:
        """The simulated connection's id (what ``exclude=`` takes)."""
        return self.connection.id

    # --- the transport side -----------------------------------------------------------------

    async def accept(self, subprotocol: str | None) -> None:
        """Nothing to do: the inbox is registered directly."""

    async def receive(self) -> str | bytes | None:
        """An inbox never sends frames to the server."""
        return None

    def send_now(self, frame: str) -> bool:
        """Keep a notification frame (other frames are ignored); always takes it at once."""
        if self._closed:
            return True
        parsed = parse_server(frame)
        if isinstance(parsed, Notification):
            if len(self.received) - self._taken >= self._capacity:
                self.connection.close(CloseCode.SLOW_CONSUMER, "inbox full")
                return True
            self.received.append(parsed)
            self._arrived.set()
        return True

    async def send(self, frame: str) -> None:
        """As :meth:`send_now` (an inbox never makes a sender wait)."""
        self.send_now(frame)

    async def close(self, code: int, reason: str) -> None:
        """Stop receiving."""
        self._closed = True

    def abort(self) -> None:
        """Stop receiving."""
        self._closed = True

    # --- the test side ----------------------------------------------------------------------

    def _check(self) -> None:
        if self.connection.close_code == CloseCode.SLOW_CONSUMER:
            raise AssertionError(
                "the inbox overflowed: more notifications arrived than its queue_size holds "
                "before they were taken; read them as they come or raise queue_size"
            )

    @property
    def notifications(self) -> list[Notification]:
        """Everything received so far (without waiting), whether ``next`` took it or not."""
        self._check()
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
        with anyio.move_on_after(timeout):
            while True:
                self._check()
                if len(self.received) > taken:
                    self._taken = taken + 1
                    return self.received[taken]
                if self._closed:
                    break
                self._arrived = anyio.Event()
                await self._arrived.wait()
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
    :class:`Inbox`, which holds at most ``queue_size`` notifications not yet taken by
    ``next``. It is unregistered on exit; what it received stays readable."""
    connection = Connection(Principal(user, claims or {}), queue_size=queue_size)
    box = Inbox(connection, queue_size)
    connection.start_sending(box, None)
    try:
        await hub.attach(connection)
        for topic in topics:
            await hub.subscribe(connection, topic)
        yield box
    finally:
        await hub.detach(connection)
        await box.close(CloseCode.NORMAL, "")
        connection.release()
