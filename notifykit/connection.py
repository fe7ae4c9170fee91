"""One registered websocket connection, as the hub sees it: who, which keys, and its outbound path.

Frames are *offered* to a connection and never waited for. An idle connection hands an offered
frame straight to its transport (:meth:`~notifykit.protocols.Transport.send_now`): for a socket
that keeps up, that is the whole send — no queue, no task switch. When the transport cannot
take a frame without waiting (the client reads slowly), the frame is queued and a writer task
sends the queue in order, awaiting the transport as long as it must; frames offered meanwhile
queue behind it. The queue is bounded in frames and in bytes: a connection whose queue is full
has fallen too far behind and is closed with ``4008 slow consumer`` rather than slowing everyone
else down or growing without bound.

The writer task is the only task that ever awaits the transport's ``send``, and it starts only
while frames wait; every coroutine is awaited by the task that created it, on any anyio backend.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

import anyio

from .connlog import log_fields
from .wire import CloseCode

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from .model import Principal
    from .protocols import Transport

__all__ = ["DEFAULT_QUEUE_BYTES", "DEFAULT_QUEUE_SIZE", "Connection"]

logger = logging.getLogger("notifykit.connection")

DEFAULT_QUEUE_SIZE = 256
"""Frames a connection may have queued before it is closed as a slow consumer (4008)."""
DEFAULT_QUEUE_BYTES = 1024 * 1024
"""Bytes (UTF-8) a connection may have queued before it is closed as a slow consumer (4008)."""


def _size(frame: str) -> int:
    """The frame's size in UTF-8 bytes (``isascii`` is O(1) in CPython: a flag on the str)."""
    return len(frame) if frame.isascii() else len(frame.encode("utf-8", "surrogatepass"))


class Connection:
    """A registered connection. Created by the gateway (or :mod:`notifykit.testing`).

    ``keys`` is the set of routing keys it is registered under; ``topics`` the topics it
    subscribed to. Frames offered before :meth:`start_sending` wait in the queue (the gateway
    queues the welcome frame that way, so it is always first). ``queue_size`` and
    ``queue_bytes`` bound what may wait to be sent; beyond either, the connection is closed
    with 4008.
    """

    __slots__ = (
        "_direct",
        "_max_bytes",
        "_max_frames",
        "_queue",
        "_queued_bytes",
        "_scope",
        "_tasks",
        "_transport",
        "_writer_done",
        "close_code",
        "close_reason",
        "dropped",
        "id",
        "keys",
        "principal",
        "topics",
    )

    def __init__(
        self,
        principal: Principal,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
    ) -> None:
        self.id = secrets.token_urlsafe(12)
        self.principal = principal
        self.keys: set[str] = set()
        self.topics: set[str] = set()
        # A list, not a deque: it is usually empty, and an empty deque costs ~600 bytes more
        # per connection; at most queue_size items, so pop(0) stays cheap.
        self._queue: list[str] = []
        self._queued_bytes = 0
        self._max_frames = queue_size
        self._max_bytes = queue_bytes
        self._transport: Transport | None = None
        self._tasks: TaskGroup | None = None
        self._writer_done: anyio.Event | None = None  # set while a writer task runs
        self._direct = False  # hand frames straight over: sending, no writer, nothing queued
        self._scope: anyio.CancelScope | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.dropped = 0
        """Frames offered and never sent: dropped with a slow consumer's queue, or still
        queued when the connection ended."""

    @property
    def user_id(self) -> str | None:
        """The connection's user, or None if anonymous."""
        return self.principal.user_id

    # --- offering frames ------------------------------------------------------------------

    @property
    def queue_size(self) -> int:
        """Frames that may wait to be sent before the connection is a slow consumer."""
        return self._max_frames

    def offer(self, frame: str, *, bounded: bool = True) -> None:
        """Send ``frame`` now if the transport takes it without waiting, else queue it; never
        waits and never raises. A full queue closes the connection with 4008 — unless
        ``bounded`` is False: a catch-up (welcome, replay) is bounded by the history kept,
        not by the queue."""
        if self._direct:  # the hot path
            try:
                if self._transport.send_now(frame):  # type: ignore[union-attr]
                    return
            except OSError:  # TransportClosed, or the server's own (uvicorn's ClientDisconnected)
                self._gone()
                return
            except Exception:
                logger.exception(
                    "sending to connection %s of user %r failed",
                    self.id,
                    self.principal.user_id,
                    extra=log_fields(self),
                )
                self.close(CloseCode.INTERNAL_ERROR, "internal error")
                return
            self._direct = False  # the transport must wait: queue, and a writer takes over
        if self.close_code is not None:
            # Closing: keep what the close will flush (nothing, for a slow consumer).
            if self.close_code == CloseCode.SLOW_CONSUMER or not self._enqueue(frame):
                self.dropped += 1
            return
        if not self._enqueue(frame, bounded):
            self.dropped += 1
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: too much queued")
            return
        self._wake_writer()

    def _enqueue(self, frame: str, bounded: bool = True) -> bool:
        size = _size(frame)
        if bounded and (
            len(self._queue) >= self._max_frames or self._queued_bytes + size > self._max_bytes
        ):
            return False
        self._queue.append(frame)
        self._queued_bytes += size
        return True

    def start_sending(self, transport: Transport, tasks: TaskGroup | None) -> None:
        """Send through ``transport`` from now on, queued frames first.

        A writer task is started in ``tasks`` whenever a frame has to wait; without ``tasks``
        (the test inbox), ``transport.send_now`` must always take the frame.
        """
        self._transport = transport
        self._tasks = tasks
        try:
            self._hand_over_queued()
        except OSError:
            self._gone()
            return
        self._wake_writer()
        self._update_direct()

    def _hand_over_queued(self) -> None:
        """Hand queued frames to the transport for as long as it takes them without waiting."""
        queue, transport = self._queue, self._transport
        while queue and transport is not None and transport.send_now(queue[0]):
            self._queued_bytes -= _size(queue.pop(0))

    def _update_direct(self) -> None:
        self._direct = (
            self._transport is not None
            and self._writer_done is None
            and not self._queue
            and self.close_code is None
        )

    def _wake_writer(self) -> None:
        if (
            self._writer_done is not None
            or not self._queue
            or self._tasks is None
            or self._transport is None
            or self.close_code is not None
        ):
            return
        self._writer_done = anyio.Event()
        self._direct = False
        self._tasks.start_soon(self._write, name=f"notifykit-writer-{self.id}")

    async def _write(self) -> None:
        done = self._writer_done
        try:
            await self._send_queued()
        finally:
            self._writer_done = None
            if done is not None:
                done.set()
            self._update_direct()

    async def _send_queued(self) -> None:
        queue = self._queue
        try:
            while queue and (transport := self._transport) is not None:
                frame = queue.pop(0)
                self._queued_bytes -= _size(frame)
                if not transport.send_now(frame):
                    await transport.send(frame)
        except OSError:  # TransportClosed, or the server's own
            self._gone()

    async def flush(self) -> None:
        """Wait until every frame offered so far is handed to the transport (a close sends
        them before its close frame). Returns at once if the client is gone."""
        while (done := self._writer_done) is not None:
            await done.wait()
        await self._send_queued()

    # --- ending ---------------------------------------------------------------------------

    def _gone(self) -> None:
        """The client is gone: stop sending, and end the connection."""
        self._transport = None
        self._direct = False
        self.release()
        if self._scope is not None:
            self._scope.cancel()

    def bind(self, scope: anyio.CancelScope) -> None:
        """Attach the cancel scope :meth:`close` cancels (the gateway's reading scope)."""
        self._scope = scope
        if self.close_code is not None:
            scope.cancel()

    def close(self, code: int, reason: str) -> None:
        """Ask for this connection to be closed with ``code``; the first request wins.

        Frames offered before are still sent before the close frame, except for a slow
        consumer (4008), whose queue is dropped at once.
        """
        self._direct = False
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        if code == CloseCode.SLOW_CONSUMER:
            self.release()  # what overflowed is not flushed
        if self._scope is not None:
            self._scope.cancel()

    def release(self) -> None:
        """Drop whatever is still queued."""
        self.dropped += len(self._queue)
        self._queue.clear()  # in place: a running writer sees it empty
        self._queued_bytes = 0

    @property
    def queued(self) -> int:
        """Frames waiting to be sent."""
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        """UTF-8 bytes waiting to be sent."""
        return self._queued_bytes

    def __repr__(self) -> str:
        return f"<Connection {self.id} user={self.principal.user_id!r}>"
