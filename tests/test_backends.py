"""The core runs on every anyio backend: a transport that makes senders wait works on trio too.

Issue 6's reproduction: a transport whose ``send`` waits on an event that the client's reader
sets; the gateway serves it while notifications are published faster than the reader reads.
trio forbids resuming a coroutine from another task, so this proves the send path awaits every
coroutine in the task that created it.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

from notifykit import Hub
from notifykit.gateway import Gateway
from notifykit.model import Handshake, Principal
from notifykit.wire import Notification, Welcome, parse_server

BACKENDS = ["asyncio", "trio"]


class NoAuth:
    """Everyone is user 42."""

    async def authenticate(self, token: str) -> Principal:
        await anyio.lowlevel.checkpoint()
        return Principal("42")


class Rendezvous:
    """A websocket whose sends wait until the client reads: one frame in flight at a time."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.wanted = anyio.Event()  # the reader wants a frame
        self.arrived = anyio.Event()  # a frame was handed over
        self.gone = anyio.Event()

    async def accept(self, subprotocol: str | None) -> None:
        await anyio.lowlevel.checkpoint()

    async def receive(self) -> str | bytes | None:
        await self.gone.wait()
        return None

    def send_now(self, frame: str) -> bool:
        return False  # never without waiting: every frame goes through send()

    async def send(self, frame: str) -> None:
        await self.wanted.wait()
        self.wanted = anyio.Event()
        self.frames.append(frame)
        self.arrived.set()

    async def close(self, code: int, reason: str) -> None:
        await anyio.lowlevel.checkpoint()

    def abort(self) -> None:
        self.gone.set()

    async def read(self) -> Any:
        self.arrived = anyio.Event()
        self.wanted.set()
        await self.arrived.wait()
        return parse_server(self.frames[-1])


async def publish_faster_than_the_client_reads() -> list[Any]:
    transport = Rendezvous()
    async with Hub() as hub, anyio.create_task_group() as tasks:
        gateway = Gateway(hub, NoAuth(), queue_size=1000)
        tasks.start_soon(gateway.serve, transport, Handshake(headers={"authorization": "Bearer x"}))
        with anyio.fail_after(5):
            received = [await transport.read()]  # the welcome
            sent = [await hub.notify_user("42", "tick", n) for n in range(50)]
            for _ in sent:
                await anyio.lowlevel.checkpoint()  # the reader is slower than the publisher
                received.append(await transport.read())
        transport.gone.set()
    assert isinstance(received[0], Welcome)
    assert [frame.id for frame in received[1:] if isinstance(frame, Notification)] == sent
    return received


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_transport_that_makes_senders_wait_works_on(backend: str) -> None:
    received = anyio.run(publish_faster_than_the_client_reads, backend=backend)
    assert len(received) == 51
