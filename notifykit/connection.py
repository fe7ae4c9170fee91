"""One registered websocket connection, as the hub sees it: who, which keys, and its outbound path.

Frames are *offered* to a connection and never waited for. An idle connection sends an offered
frame at once, inline: the transport's ``send`` runs one step right there, and for a socket
that is not flow-controlled that step is the whole send — no queue, no task switch. Only when a
send has to wait (the client reads slowly) does a writer task take over, and frames offered
meanwhile queue behind it, in order. The queue is bounded: a connection whose queue is full has
fallen too far behind and is closed with ``4008 slow consumer`` rather than slowing everyone
else down or growing without bound.
"""

from __future__ import annotations

import logging
import secrets
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from .wire import CloseCode

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Generator

    import anyio
    from anyio.abc import TaskGroup

    from .model import Principal
    from .protocols import Transport

__all__ = ["Connection"]

logger = logging.getLogger("notifykit.connection")


async def _awaiting(awaitable: Awaitable[None]) -> None:
    await awaitable


class _Started:
    """A send that ran its first step inline and then had to wait: awaiting it finishes it."""

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, None], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, None]:
        # Re-yield what the coroutine yielded to the event loop, from the writer task, and
        # pass the loop's answers (or exceptions, e.g. cancellation) back into it.
        coro, value = self._coro, self._yielded
        while True:
            try:
                sent = yield value
            except BaseException as exc:
                try:
                    value = coro.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                value = coro.send(sent)
            except StopIteration:
                return

    def close(self) -> None:
        """Abandon the send (the connection is being torn down)."""
        self._coro.close()


class Connection:
    """A registered connection. Created by the gateway (or :mod:`notifykit.testing`).

    ``keys`` is the set of routing keys it is registered under; ``topics`` the topics it
    subscribed to. Frames offered before :meth:`start_sending` wait in the queue (the gateway
    queues the welcome frame that way, so it is always first).
    """

    __slots__ = (
        "_direct",
        "_queue",
        "_queue_size",
        "_scope",
        "_send",
        "_tasks",
        "_transport",
        "_writing",
        "close_code",
        "close_reason",
        "id",
        "keys",
        "principal",
        "topics",
    )

    def __init__(self, principal: Principal, *, queue_size: int = 256) -> None:
        self.id = secrets.token_urlsafe(12)
        self.principal = principal
        self.keys: set[str] = set()
        self.topics: set[str] = set()
        # A list, not a deque: it is usually empty, and an empty deque costs ~600 bytes more
        # per connection; at most queue_size items, so pop(0) stays cheap.
        self._queue: list[str | _Started] = []
        self._queue_size = queue_size
        self._transport: Transport | None = None
        self._send: Callable[[str], Awaitable[None]] | None = None
        self._tasks: TaskGroup | None = None
        self._writing = False
        self._direct = False  # send inline: sending, not writing, nothing queued, not closing
        self._scope: anyio.CancelScope | None = None
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def user_id(self) -> str | None:
        """The connection's user, or None if anonymous."""
        return self.principal.user_id

    def offer(self, frame: str) -> None:
        """Send ``frame`` now if the connection is idle, else queue it; never waits.

        A full queue closes the connection with 4008.
        """
        if self._direct:  # the hot path: sending, idle, not closing
            coro = self._send(frame)  # type: ignore[misc]
            if type(coro) is not CoroutineType:  # an awaitable that is not a coroutine
                coro = _awaiting(coro)
            try:
                yielded = coro.send(None)
            except StopIteration:
                return  # sent
            except OSError:  # TransportClosed, or the server's own (uvicorn's ClientDisconnected)
                self._gone()
                return
            except Exception:
                logger.exception("sending to connection %s failed", self.id)
                self.close(CloseCode.INTERNAL_ERROR, "internal error")
                return
            # The send has to wait: a writer task finishes it, and later frames queue behind.
            self._direct = False
            self._queue.append(_Started(coro, yielded))
            self._wake_writer()
            return
        queue = self._queue
        if self.close_code is not None:
            # Closing: queue what the close will flush (never for a slow consumer).
            if self.close_code != CloseCode.SLOW_CONSUMER and len(queue) < self._queue_size:
                queue.append(frame)
            return
        if len(queue) >= self._queue_size:
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: too many frames queued")
            return
        queue.append(frame)
        self._wake_writer()

    def start_sending(self, transport: Transport, tasks: TaskGroup | None) -> None:
        """Send through ``transport`` from now on, queued frames first; a writer task is started
        in ``tasks`` whenever a send has to wait (without ``tasks``, ``transport.send`` must
        never wait, as for the test inbox)."""
        self._transport = transport
        self._send = transport.send
        self._tasks = tasks
        self._wake_writer()
        self._update_direct()

    def _update_direct(self) -> None:
        self._direct = (
            self._transport is not None
            and not self._writing
            and not self._queue
            and self.close_code is None
        )

    def _wake_writer(self) -> None:
        if self._writing or not self._queue or self._tasks is None or self.close_code is not None:
            return
        self._writing = True
        self._direct = False
        self._tasks.start_soon(self._write, name=f"notifykit-writer-{self.id}")

    async def _write(self) -> None:
        try:
            await self.drain()
        finally:
            self._writing = False
            self._update_direct()

    async def drain(self) -> None:
        """Send every queued frame, in order (used by the writer, and on close to flush)."""
        queue, transport = self._queue, self._transport
        try:
            while queue and transport is not None:
                item = queue.pop(0)
                if isinstance(item, str):
                    await transport.send(item)
                else:
                    await item
        except OSError:  # TransportClosed, or the server's own
            self._gone()

    def _gone(self) -> None:
        """The client is gone: stop sending, and end the connection."""
        self._transport = None
        self._direct = False
        self.release()
        if self._scope is not None:
            self._scope.cancel()

    def bind(self, scope: anyio.CancelScope) -> None:
        """Attach the cancel scope :meth:`close` cancels (the gateway's per-connection scope)."""
        self._scope = scope
        if self.close_code is not None:
            scope.cancel()

    def close(self, code: int, reason: str) -> None:
        """Ask for this connection to be closed with ``code``; the first request wins."""
        self._direct = False
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        if code == CloseCode.SLOW_CONSUMER:
            self.release()  # what overflowed is not flushed
        if self._scope is not None:
            self._scope.cancel()

    def release(self) -> None:
        """Drop whatever is still queued (after the connection is unregistered)."""
        for item in self._queue:
            if isinstance(item, _Started):
                item.close()
        self._queue.clear()  # in place: a running drain() sees it empty

    @property
    def queued(self) -> int:
        """Frames waiting to be sent."""
        return len(self._queue)

    def __repr__(self) -> str:
        return f"<Connection {self.id} user={self.principal.user_id!r}>"
