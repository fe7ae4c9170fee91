"""A TCP load balancer for the tests: one address in front of several instances.

:class:`Balancer` listens on 127.0.0.1, in the test's own event loop, and hands each new
connection to the next backend in turn (round-robin), skipping those that refuse it — a
stopped or killed instance — as a load balancer with a health check would. Bytes are copied
both ways untouched; when either side closes, so does the other, so that a client behind it
sees its instance die (a websocket closed without a close frame) and reconnects "to the
service", landing on another instance.

:meth:`Balancer.drop` cuts connections at once (a load balancer restarting, a network
partition): their clients reconnect too.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import anyio
from anyio import CancelScope
from anyio.abc import SocketAttribute, SocketStream

HOST = "127.0.0.1"
CONNECT_TIMEOUT = 2.0
"""Seconds a backend may take to accept a connection before the next one is tried."""


@dataclass(eq=False)
class Link:
    """One client connection and the backend it was given."""

    backend: int
    """The backend's port."""
    scope: CancelScope


class Balancer:
    """Round-robin over the backends on ``ports`` (see the module docstring).

    ``async with balancer.running():`` listens on :attr:`port`; every connection it could not
    place (each backend refused) is closed at once and counted in :attr:`unplaced`.
    """

    def __init__(self, ports: Sequence[int]) -> None:
        self.ports = list(ports)
        self.port = 0
        """Where it listens, once running."""
        self.links: set[Link] = set()
        """The connections open now."""
        self.placed: Counter[int] = Counter()
        """Connections handed to each backend (by port), since the start."""
        self.refused: Counter[int] = Counter()
        """Connection attempts each backend refused (or did not accept in time)."""
        self.unplaced = 0
        self._turn = 0

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port>``: the service's address for websocket clients."""
        return f"ws://{HOST}:{self.port}"

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Balancer]:
        """Listen until the block ends; then every connection through it is closed."""
        listener = await anyio.create_tcp_listener(local_host=HOST, local_port=0)
        self.port = listener.extra(SocketAttribute.local_port)
        async with listener, anyio.create_task_group() as tasks:
            tasks.start_soon(listener.serve, self._handle)
            try:
                yield self
            finally:
                tasks.cancel_scope.cancel()

    def drop(self, which: Callable[[Link], bool] = lambda _link: True) -> int:
        """Cut the connections ``which`` selects (all by default); return how many."""
        chosen = [link for link in self.links if which(link)]
        for link in chosen:
            link.scope.cancel()
        return len(chosen)

    def on(self, port: int) -> int:
        """How many connections are open to the backend on ``port``."""
        return sum(1 for link in self.links if link.backend == port)

    async def _connect(self) -> tuple[int, SocketStream] | None:
        for _ in range(len(self.ports)):
            port = self.ports[self._turn % len(self.ports)]
            self._turn += 1
            try:
                with anyio.fail_after(CONNECT_TIMEOUT):
                    return port, await anyio.connect_tcp(HOST, port)
            except (OSError, TimeoutError):
                self.refused[port] += 1
        return None

    async def _handle(self, client: SocketStream) -> None:
        async with client:
            placed = await self._connect()
            if placed is None:
                self.unplaced += 1
                return
            port, upstream = placed
            self.placed[port] += 1
            link: Link | None = None
            try:
                async with upstream, anyio.create_task_group() as pipes:
                    link = Link(port, pipes.cancel_scope)
                    self.links.add(link)
                    pipes.start_soon(_pipe, client, upstream, pipes.cancel_scope)
                    pipes.start_soon(_pipe, upstream, client, pipes.cancel_scope)
            finally:
                if link is not None:
                    self.links.discard(link)


async def _pipe(source: SocketStream, sink: SocketStream, both: CancelScope) -> None:
    """Copy ``source`` to ``sink`` until either ends; then end the connection both ways."""
    try:
        async for chunk in source:
            await sink.send(chunk)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
    finally:
        both.cancel()
