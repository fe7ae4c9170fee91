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

Absence is proved without sleeping: :meth:`Inbox.assert_nothing` publishes a *sentinel*
(event :data:`SENTINEL_EVENT`) through the hub to every routing key the inbox listens on and
waits until each comes back; a propagator keeps publish order per key, so what was published
before it and has not arrived by then never will. Inboxes drop sentinels, their own and
others'; other connections of the same hub would receive them.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

import anyio

from ..connection import Connection
from ..model import Principal
from ..wire import CloseCode, Notification, parse_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
    from typing import Any

    from ..hub import Hub

__all__ = ["SENTINEL_EVENT", "Inbox", "inbox"]

SENTINEL_EVENT = "notifykit.testing.sentinel"
"""The event of the notifications :meth:`Inbox.assert_nothing` sends to prove absence."""


class Inbox:
    """The notifications one simulated connection received, in order.

    ``next()`` takes them one at a time, waiting for each; ``notifications`` and ``events``
    show everything received so far without waiting and without taking anything. It is the
    connection's transport: frames reach it exactly as they would reach a websocket. ``hub``
    is where ``assert_nothing`` publishes its sentinels.
    """

    def __init__(self, connection: Connection, capacity: int, hub: Hub) -> None:
        self.connection = connection
        self.received: list[Notification] = []
        """Every notification received so far, in order (sentinels aside)."""
        self._capacity = capacity
        self._hub = hub
        self._taken = 0
        self._closed = False
        self._arrived = anyio.Event()
        self._round = 0  # of sentinels
        self._awaited: set[str] = set()  # the routing keys whose sentinel is not back yet
        self._sentinel_back = anyio.Event()

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
        """Keep a notification frame (sentinels and other frames are dropped); always takes it
        at once."""
        if self._closed:
            return True
        parsed = parse_server(frame)
        if isinstance(parsed, Notification):
            if parsed.event == SENTINEL_EVENT:
                self._returned(parsed.data)
                return True
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

    async def assert_nothing(self, timeout: float = 1.0) -> None:  # noqa: ASYNC109
        """Raise ``AssertionError`` if the inbox received a notification that ``next`` has not
        returned, or receives one before a sentinel published now comes back.

        A sentinel goes through the hub to each routing key the inbox listens on (its user,
        "authenticated", "everyone", each of its topics): whatever was published to those
        before has arrived once the sentinels have. With the in-memory propagator they are back
        before they are published; ``timeout`` bounds the wait for other propagators, and
        ``TimeoutError`` says they did not come back. A closed inbox is checked at once.
        """
        self._expect_nothing_unread()
        if not self._closed:
            await self._round_trip(timeout)
            self._expect_nothing_unread()

    def _expect_nothing_unread(self) -> None:
        unexpected = self.notifications[self._taken :]
        if unexpected:
            raise AssertionError(
                f"expected no notification, got {[n.event for n in unexpected]}: {unexpected}"
            )

    def _sentinel_routes(self) -> dict[str, Callable[[str, Any], Awaitable[str]]]:
        """How to publish to each routing key of the inbox, by a name for messages."""
        hub, user_id = self._hub, self.connection.user_id
        routes: dict[str, Callable[[str, Any], Awaitable[str]]] = {"everyone": hub.broadcast}
        if user_id is not None:
            routes[f"user {user_id!r}"] = partial(hub.notify_user, user_id)
            routes["authenticated"] = hub.notify_authenticated
        for topic in sorted(self.connection.topics):
            routes[f"topic {topic!r}"] = partial(hub.notify_topic, topic)
        return routes

    async def _round_trip(self, within: float) -> None:
        """Publish a sentinel to each routing key and wait until every one is back."""
        self._round += 1
        routes = self._sentinel_routes()
        self._awaited = set(routes)
        for route, publish in routes.items():
            await publish(
                SENTINEL_EVENT, {"inbox": self.connection_id, "round": self._round, "via": route}
            )
        with anyio.move_on_after(within):
            while self._awaited and not self._closed:
                self._sentinel_back = anyio.Event()
                await self._sentinel_back.wait()
        if self._awaited and not self._closed:
            raise TimeoutError(
                f"the sentinels sent to {sorted(self._awaited)} did not come back within "
                f"{within} s, so nothing proves that no notification is still on its way"
            )

    def _returned(self, data: object) -> None:
        if (
            isinstance(data, dict)
            and data.get("inbox") == self.connection_id
            and data.get("round") == self._round
        ):
            self._awaited.discard(data.get("via"))
            self._sentinel_back.set()


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
    box = Inbox(connection, queue_size, hub)
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
