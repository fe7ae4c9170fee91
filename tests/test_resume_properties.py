"""Property: for any interleaving of publishes, disconnects and resumes, every client sees every
notification within retention exactly once and in offset order, and ``recovered`` is true
exactly when that held.

Hypothesis draws a script of steps; a real hub and gateway run it over in-memory websockets,
with a small history so that retention runs out often. A model — the list of everything
published to each stream — says what each client must have seen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from memory_transport import MemoryClient, memory_websocket

from notifykit import Hub
from notifykit.gateway import Gateway
from notifykit.memory import MemoryPropagator
from notifykit.model import Handshake, Principal
from notifykit.wire import Notification, Position, Welcome

pytestmark = pytest.mark.anyio

HISTORY = 4  # entries kept per stream: small, so that resumes fall out of retention often
CLIENTS = 3


class TokenIsUser:
    async def authenticate(self, token: str) -> Principal:
        await anyio.lowlevel.checkpoint()
        return Principal(token)


@dataclass
class Client:
    """One client of user "u": its connection (if any) and the positions it keeps."""

    user: str
    positions: dict[str, Position] = field(default_factory=dict)
    socket: MemoryClient | None = None
    stopped: anyio.Event | None = None

    def resume_query(self) -> dict[str, str]:
        if not self.positions:
            return {}
        return {
            "resume": json.dumps(
                {s: {"epoch": p.epoch, "offset": p.offset} for s, p in self.positions.items()}
            )
        }


publish = st.tuples(st.just("publish"), st.sampled_from(["user", "user", "broadcast"]))
steps = st.lists(
    st.one_of(
        publish,
        publish,
        publish,  # three times as likely: clients away long enough fall out of retention
        st.tuples(st.just("connect"), st.integers(0, CLIENTS - 1)),
        st.tuples(st.just("disconnect"), st.integers(0, CLIENTS - 1)),
    ),
    min_size=1,
    max_size=60,
)
AWAY_TOO_LONG = [("connect", 0), ("disconnect", 0)] + [("publish", "user")] * 6 + [("connect", 0)]
AWAY_A_LITTLE = [("connect", 0), ("disconnect", 0), ("publish", "user"), ("publish", "broadcast")]
AWAY_A_LITTLE += [("connect", 0), ("publish", "user")]


async def run(script: list[tuple[str, object]]) -> None:
    published: dict[str, list[str]] = {"u:u": [], "all": []}
    clients = [Client("u") for _ in range(CLIENTS)]
    async with (
        Hub(MemoryPropagator(history_size=HISTORY)) as hub,
        anyio.create_task_group() as tasks,
    ):
        gateway = Gateway(hub, TokenIsUser(), queue_size=1000)

        async def connect(client: Client) -> None:
            socket, transport = memory_websocket()
            handshake = Handshake(
                headers={"authorization": f"Bearer {client.user}"}, query=client.resume_query()
            )
            client.socket, client.stopped = socket, anyio.Event()
            stopped = client.stopped

            async def serve() -> None:
                await gateway.serve(transport, handshake)
                stopped.set()

            tasks.start_soon(serve)
            welcome = await socket.recv()
            assert isinstance(welcome, Welcome)
            resumed = dict(client.positions)
            continuous = {
                stream: _continues(mine, welcome.positions[stream], published.get(stream, []))
                for stream, mine in resumed.items()
            }
            assert welcome.recovered is (all(continuous.values()) if resumed else None)
            # What was missed on each stream that continued, then nothing else before live.
            missed = {
                stream: published.get(stream, [])[resumed[stream].offset :]
                for stream, ok in continuous.items()
                if ok
            }
            replayed: dict[str, list[str]] = {stream: [] for stream in missed}
            for _ in range(sum(len(ids) for ids in missed.values())):
                frame = await socket.recv()
                assert isinstance(frame, Notification)
                assert frame.stream in replayed, f"replayed {frame.stream}, which broke"
                replayed[frame.stream].append(frame.id)
            assert replayed == missed
            client.positions = dict(welcome.positions)

        async def disconnect(client: Client) -> None:
            if client.socket is not None and client.stopped is not None:
                client.socket.disconnect()
                await client.stopped.wait()
            client.socket = None

        async def receive_live(stream: str, notification_id: str) -> None:
            for client in clients:
                if client.socket is None:
                    continue
                frame = await client.socket.recv()
                assert isinstance(frame, Notification)
                assert (frame.stream, frame.id) == (stream, notification_id)
                mine = client.positions[stream]
                assert frame.epoch == mine.epoch
                assert frame.offset == mine.offset + 1, "a gap or a duplicate"
                client.positions[stream] = Position(frame.epoch, frame.offset)

        with anyio.fail_after(10):
            for action, argument in script:
                if action == "publish":
                    if argument == "user":
                        stream, sent = "u:u", await hub.notify_user("u", "e")
                    else:
                        stream, sent = "all", await hub.broadcast("e")
                    published[stream].append(sent)
                    await receive_live(stream, sent)
                elif action == "connect":
                    client = clients[int(str(argument))]
                    if client.socket is None:
                        await connect(client)
                else:
                    await disconnect(clients[int(str(argument))])
            for client in clients:
                await disconnect(client)
        tasks.cancel_scope.cancel()


def _continues(mine: Position, now: Position, published: list[str]) -> bool:
    """What the server must answer: the stream continued from ``mine``, within retention."""
    return (
        mine.epoch == now.epoch
        and mine.offset <= now.offset
        and (mine.offset == now.offset or mine.offset + 1 > len(published) - HISTORY)
    )


@example(script=AWAY_TOO_LONG)
@example(script=AWAY_A_LITTLE)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=steps)
async def test_any_interleaving_delivers_everything_within_retention_exactly_once_in_order(
    script: list[tuple[str, object]],
) -> None:
    await run(script)
