"""Experiment ``eager``: send a frame inline when its connection is idle.

Today every frame goes through the connection's anyio memory stream and wakes the
connection's writer task, which then awaits the ASGI ``send``. Here ``Connection.offer``
first checks whether the connection is idle (nothing queued, the writer not busy); if so it
runs the transport's ``send`` coroutine one step right away. With uvicorn that step completes
(``send`` only suspends while the socket is flow-controlled), so the frame is written with no
queue, no task switch and no checkpoint. If the step does suspend, the started coroutine is
queued like a frame and the writer task finishes it; later frames queue behind it, so order
is kept and a slow consumer still fills its bounded queue and is closed as before.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any

import anyio

from notifykit import gateway as nk_gateway
from notifykit.connection import Connection
from notifykit.errors import TransportClosed


class _Resume:
    """A coroutine that already ran one step and suspended, made awaitable again."""

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, None]:
        coro = self._coro
        value = self._yielded
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # cancellation: pass it into the coroutine
                try:
                    value = coro.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                value = coro.send(sent)
            except StopIteration:
                return


class EagerConnection(Connection):
    """A connection whose ``offer`` sends inline while nothing is pending."""

    __slots__ = ("busy", "transport")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transport: Any = None
        self.busy = False
        """True while the writer task has frames to send (queued or handed over)."""

    def offer(self, frame: Any) -> None:
        """Send now if idle; otherwise queue (see the module docstring)."""
        transport = self.transport
        if transport is not None and not self.busy:
            coro = transport.send(frame)
            try:
                yielded = coro.send(None)
            except StopIteration:
                return
            except TransportClosed:
                self.transport = None  # the writer meets the closed transport and ends
                return
            frame = _Resume(coro, yielded)
        self.busy = True
        Connection.offer(self, frame)


async def _write(
    self: nk_gateway.Gateway, connection: Any, transport: Any, tasks: anyio.CancelScope
) -> None:
    connection.transport = transport
    buffer = connection._inbox._state.buffer
    try:
        async for frame in connection.outbox:
            if type(frame) is _Resume:
                await frame
            else:
                await transport.send(frame)
            if not buffer:
                connection.busy = False
    except TransportClosed:
        tasks.cancel()
    finally:
        connection.transport = None


def install() -> None:
    """Patch notifykit's gateway in this process."""
    nk_gateway.Connection = EagerConnection  # type: ignore[attr-defined]
    nk_gateway.Gateway._write = _write  # type: ignore[method-assign]
