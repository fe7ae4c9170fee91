"""Churning clients for the soak test (``tests/test_soak.py``), in a process of their own.

    python tests/soak_clients.py CONFIG.json

Each client is one user: it connects to one of the instances (chosen at random every time),
subscribes to its topics, receives for a few seconds, disconnects, waits a moment and connects
again — resuming from the positions it kept, as a client that must not miss anything does — until
the churn's time is up. Then it connects one last time (resuming too), and this process prints
``ready`` once every client's last connection is open. The test then publishes a last
notification to every user and topic, and the broadcast ``soak.end``: each client reads until
that one and leaves. The process writes what each client received to the report file and prints
``done``.

Three kinds of clients, by index:

* ``notify`` (most): notifykit's ``NotifyClient``, a new one per connection, seeded with the
  ``positions`` the previous one kept (a fixed token, or a token factory every other client);
* ``raw``: a raw ``websockets`` connection keeping its positions in the client's
  ``PositionBook`` (``resume`` on connect, ``since`` on subscribe — so its topics resume too,
  which a new ``NotifyClient`` cannot be told); one connection in three it drops without a
  close handshake.

Every wait is bounded; a client that fails records why and stops.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from notifykit.client import Backoff, ConnectionState, NotifyClient, PositionBook, StateChange
from notifykit.jwt import mint_token

USER_EVENT, TOPIC_EVENT, ALL_EVENT, END_EVENT = "soak.user", "soak.topic", "soak.all", "soak.end"
"""The events the test publishes: to one user, to a topic, to everyone; the last broadcast."""
OPEN_WAIT = 30.0  # seconds for a connection to be open (the box is shared and busy)
END_WAIT = 60.0  # seconds for the last notifications to arrive once published
BACKOFF = Backoff(initial=0.2, maximum=2.0)


@dataclass
class Record:
    """What one client saw, over all its connections."""

    user: str
    kind: str
    topics: list[str]
    connections: int = 0
    recovered: list[bool | None] = field(default_factory=list)
    """The ``recovered`` flag of each ``welcome`` (None: nothing resumed, or no history)."""
    topic_recovered: dict[str, list[bool | None]] = field(default_factory=dict)
    """Per topic, the ``recovered`` flag of each ``subscribed`` after the first (raw clients)."""
    got: dict[str, list[list[Any]]] = field(default_factory=lambda: defaultdict(list))
    """Per stream (``user``, ``all``, ``t:<topic>``): ``[seq, offset, epoch, session]`` in
    arrival order; a session is one connection the client made on purpose."""
    session: int = 0
    reconnected: list[int] = field(default_factory=list)
    """Sessions in which a ``NotifyClient`` reconnected by itself (the server closed it)."""
    _opens: int = 0
    ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    ended: bool = False
    ready: bool = False
    errors: list[str] = field(default_factory=list)

    def take(self, notification_id: str, event: str, data: Any, topic: Any, offset: Any,
             epoch: Any) -> None:  # fmt: skip
        """Record one notification handed to the application."""
        if notification_id in self.ids:
            self.duplicates += 1
            return
        self.ids.add(notification_id)
        if event == TOPIC_EVENT:
            stream = f"t:{topic}"
        elif event == USER_EVENT:
            stream = "user"
        else:
            stream = "all"
        self.got[stream].append([data["seq"], offset, epoch, self.session])
        if event == END_EVENT:
            self.ended = True

    def report(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "kind": self.kind,
            "topics": self.topics,
            "connections": self.connections,
            "recovered": self.recovered,
            "topic_recovered": self.topic_recovered,
            "got": dict(self.got),
            "reconnected": self.reconnected,
            "duplicates": self.duplicates,
            "ended": self.ended,
            "errors": self.errors,
        }


@dataclass
class Churn:
    """The configuration every client of this process shares."""

    urls: list[str]
    secret: str
    topics: list[str]
    deadline: float
    live: tuple[float, float]
    gap: tuple[float, float]
    start_spread: float
    clients: int
    ready_count: int = 0
    all_ready: asyncio.Event = field(default_factory=asyncio.Event)

    def token(self, user: str) -> str:
        return mint_token(user, secret=self.secret, ttl=3600, claims={"topics": ["room:*"]})

    def ready(self, rec: Record) -> None:
        """``rec``'s last connection is open (or it failed): count it once."""
        if rec.ready:
            return
        rec.ready = True
        self.ready_count += 1
        if self.ready_count == self.clients:
            self.all_ready.set()


# --- NotifyClient ------------------------------------------------------------------------------


async def notify_client(churn: Churn, rec: Record, index: int, rng: random.Random) -> None:
    positions = None
    options: dict[str, Any] = {}
    if index % 2:
        options["token"] = churn.token(rec.user)
    else:

        async def factory() -> str:
            return churn.token(rec.user)

        options["token_factory"] = factory

    def on_state(change: StateChange) -> None:
        if change.state is ConnectionState.OPEN:
            rec.connections += 1
            rec.recovered.append(change.recovered)
            rec._opens += 1
            if rec._opens == 2:
                rec.reconnected.append(rec.session)

    final = False
    while not final:
        final = time.monotonic() >= churn.deadline
        rec.session += 1
        rec._opens = 0
        client = NotifyClient(
            rng.choice(churn.urls),
            topics=rec.topics,
            positions=positions,
            on_state=on_state,
            backoff=BACKOFF,
            **options,
        )
        async with client:
            await asyncio.wait_for(client.wait_open(), OPEN_WAIT)
            reader = asyncio.create_task(read_notify(client, rec))
            if final:
                churn.ready(rec)
                await asyncio.wait_for(asyncio.shield(reader), END_WAIT)
            else:
                await asyncio.sleep(
                    min(rng.uniform(*churn.live), churn.deadline - time.monotonic())
                )
        await reader  # the client is closed: what it buffered is read, then the iteration ends
        positions = client.positions
        if not final:
            await asyncio.sleep(rng.uniform(*churn.gap))


async def read_notify(client: NotifyClient, rec: Record) -> None:
    async for n in client:
        rec.take(n.id, n.event, n.data, n.topic, n.offset, n.epoch)
        if rec.ended:
            return


# --- raw websockets with a PositionBook -------------------------------------------------------


async def raw_client(churn: Churn, rec: Record, index: int, rng: random.Random) -> None:
    book = PositionBook()
    headers = {"Authorization": f"Bearer {churn.token(rec.user)}"}
    subscribed_before: set[str] = set()
    cycle = 0
    final = False
    while not final:
        final = time.monotonic() >= churn.deadline
        cycle += 1
        rec.session = cycle
        url = book.resume_url(rng.choice(churn.urls))
        async with connect(
            url,
            additional_headers=headers,
            subprotocols=[Subprotocol("notifykit.v1")],
            open_timeout=OPEN_WAIT,
            close_timeout=2,
        ) as ws:
            welcome = json.loads(await asyncio.wait_for(ws.recv(), OPEN_WAIT))
            if welcome.get("type") != "welcome":
                raise RuntimeError(f"first frame: {welcome}")
            rec.connections += 1
            rec.recovered.append(book.welcomed(welcome))
            pending = set()
            for topic in rec.topics:
                since = book.since(topic)
                frame: dict[str, Any] = {"type": "subscribe", "topic": topic, "ref": topic}
                if since is not None:
                    frame["since"] = since.to_json()
                elif topic in subscribed_before:
                    rec.topic_recovered.setdefault(topic, []).append(False)  # cannot resume
                await ws.send(json.dumps(frame))
                pending.add(topic)
            if final:
                await read_raw(ws, book, rec, pending, subscribed_before, until_end=True,
                               ready=lambda: churn.ready(rec))  # fmt: skip
            else:
                live = min(rng.uniform(*churn.live), churn.deadline - time.monotonic())
                try:
                    async with asyncio.timeout(max(live, 0.01)):
                        await read_raw(ws, book, rec, pending, subscribed_before)
                except TimeoutError:
                    pass
                if cycle % 3 == 0:
                    ws.transport.abort()  # gone without a close handshake
        if not final:
            await asyncio.sleep(rng.uniform(*churn.gap))


async def read_raw(ws: Any, book: PositionBook, rec: Record, pending: set[str],
                   subscribed_before: set[str], *, until_end: bool = False,
                   ready: Any = None) -> None:  # fmt: skip
    if ready is not None and not pending:
        ready()
    deadline = asyncio.get_running_loop().time() + (END_WAIT + OPEN_WAIT)
    async with asyncio.timeout_at(deadline if until_end else None):
        while True:
            frame = json.loads(await ws.recv())
            kind = frame.get("type")
            if kind == "notification":
                if book.accept(frame):
                    rec.take(frame["id"], frame["event"], frame.get("data"), frame.get("topic"),
                             frame.get("offset"), frame.get("epoch"))  # fmt: skip
                    if until_end and rec.ended:
                        return
            elif kind == "subscribed":
                topic = frame["topic"]
                recovered = book.subscribed(topic, frame)
                if topic in subscribed_before and "recovered" in frame:
                    rec.topic_recovered.setdefault(topic, []).append(recovered)
                subscribed_before.add(topic)
                pending.discard(topic)
                if ready is not None and not pending:
                    ready()
            elif kind == "error":
                rec.errors.append(f"error frame: {frame}")


# --- the process ------------------------------------------------------------------------------


async def run_client(churn: Churn, rec: Record, index: int, seed: int) -> None:
    rng = random.Random(seed * 100_003 + index)
    await asyncio.sleep(rng.uniform(0, churn.start_spread))
    try:
        if rec.kind == "raw":
            await raw_client(churn, rec, index, rng)
        else:
            await notify_client(churn, rec, index, rng)
    except Exception as exc:  # recorded: the test fails on it
        rec.errors.append(f"{type(exc).__name__}: {exc}")
        churn.ready(rec)  # do not hold the others back


def topics_for(index: int, topics: list[str]) -> list[str]:
    """None, one or two of ``topics``, by index."""
    count = index % 3
    return [topics[(index + 3 * k) % len(topics)] for k in range(count)]


async def churn_all(config: dict[str, Any]) -> list[Record]:
    """Run every client of this process to its end; what each saw."""
    users: list[str] = config["users"]
    churn = Churn(
        urls=config["urls"],
        secret=config["secret"],
        topics=config["topics"],
        deadline=time.monotonic() + config["seconds"],
        live=(config["live"][0], config["live"][1]),
        gap=(config["gap"][0], config["gap"][1]),
        start_spread=config["start_spread"],
        clients=len(users),
    )
    records = [
        Record(user, "raw" if index % 4 == 3 else "notify", topics_for(index, churn.topics))
        for index, user in enumerate(users)
    ]
    tasks = [
        asyncio.create_task(run_client(churn, rec, index, config["seed"]))
        for index, rec in enumerate(records)
    ]
    await asyncio.wait_for(churn.all_ready.wait(), config["seconds"] + OPEN_WAIT * 4)
    print("ready", flush=True)
    await asyncio.gather(*tasks)
    return records


def main(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    records = asyncio.run(churn_all(config))
    Path(config["report"]).write_text(json.dumps([rec.report() for rec in records]))
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
