"""Chaos: instances and Redis fail mid-stream, and clients that resume lose nothing.

Three ``notifykit serve`` instances share one real Redis. A load balancer in this process
(:class:`balancer.Balancer`: round-robin over the instances, skipping those that refuse) stands
in front of them, so that a client reconnects "to the service" and lands on an instance that is
alive. :data:`CLIENTS` clients — notifykit's own ``NotifyClient``, which reconnects and resumes
by itself — connect through it, one per user, each subscribed to two topics. Once all are open,
a publisher sends a steady stream through the HTTP API of the instances, in turn: to single
users, to topics and to everyone, each stream's notifications numbered in publish order. It
retries a ``503`` (not accepted) with backoff, on the next instance; a request that got no
answer (its instance died under it) is *uncertain*, and retried too.

Then something fails, while the stream goes on:

* ``kill -9`` of one of the three instances: its clients reconnect to the others and resume;
* Redis killed and started again, with persistence (append-only file, fsync at every write)
  and without, while the load balancer cuts half the clients off, so that they resume once
  Redis is back; the others stay connected to their instances all along;
* a rolling restart: each instance in turn taken out of the publisher's rotation, stopped
  (SIGTERM: its clients get ``1001``), started again, ready, and put back — as a deploy.

Afterwards every client is audited, stream by stream (its user's, "everyone", its two topics),
against what the publisher was told:

* **lost** — a notification accepted (``202``) for a stream the client receives, never handed
  to the application (every one was published after the client first connected);
* **duplicates** — one notification id handed out twice; **on the wire**, one stream offset
  sent twice by the servers (before the client's own filter, which would hide it);
* **out of order** — a stream's notifications not in publish order, or offsets going back;
* **unknown** — a notification the publisher never sent, or with another id than the ``202``
  said; a ``503`` that was delivered anyway is counted apart, as is an uncertain request that
  was delivered (then its retry is delivered as well: the same number twice, under two ids —
  the publisher's retry, not a duplicate of notifykit's);
* **resumes** — the ``recovered`` flag of every ``welcome`` after a client's first, and of
  every ``subscribed`` for a topic it resumed with ``since``.

With history kept, nothing may be lost and every resume must say ``recovered: true``. When
Redis loses everything (no persistence), the epochs change: a resume from a position of before
must say ``recovered: false``, and a client may miss a notification only on a stream it was
told that about — never silently. The figures are printed (``-s`` shows them);
``NOTIFYKIT_CHAOS_CLIENTS`` (default 24) and ``NOTIFYKIT_CHAOS_SCALE`` (default 1: the rates
and the counts of notifications) make a bigger run.

A last test pauses Redis at the moment a client, back after a cut, subscribes to its topic
again: the server answers ``unavailable`` (retry later), and the client must keep the topic.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import signal
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from balancer import Balancer
from servers import RedisServer
from servers_e2e import (
    API_KEY,
    FAST_BACKOFF,
    FRAME_TIMEOUT,
    SECRET,
    Listener,
    Server,
    publish,
    start_serve,
    token,
)

from notifykit.client import ConnectionState, Position, StateChange
from notifykit.wire import Notification, Subscribed

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.redis]

HOST = "127.0.0.1"
INSTANCES = 3
CLIENTS = int(os.environ.get("NOTIFYKIT_CHAOS_CLIENTS", "24"))
SCALE = float(os.environ.get("NOTIFYKIT_CHAOS_SCALE", "1"))
"""Multiplies the publish rates and the counts below (a longer, busier run: 3)."""
TOPICS = [f"room:{n}" for n in range(4)]
RATES = {"user": 30.0 * SCALE, "topic": 8.0 * SCALE, "all": 4.0 * SCALE}
"""Notifications per second, in all, to users, to topics and to everyone."""
USER_LANES = 3  # publishers to users, each owning a share of the users (one stream, one lane)
BEFORE = int(100 * SCALE)  # notifications accepted before the failure
AFTER = int(150 * SCALE)  # notifications accepted once the service is whole again
RETRY = (0.05, 1.0)  # the publisher's backoff after a 503, in seconds: first, largest
PUBLISH_WITHIN = 30.0  # seconds a notification may take to be accepted, retries included
OUTAGE_REFUSALS = 25  # publishes refused (503) before Redis starts again: about 2 s
BACK_WITHIN = 30.0  # seconds the clients cut off may take to be open again
DRAIN_WITHIN = 30.0  # seconds the last notifications may take to reach every client
EVENT = "chaos"

ACCEPTED, REFUSED, UNCERTAIN, UNSENT = "accepted", "refused", "uncertain", "unsent"
"""What one publish attempt got: ``202``; ``503``; no answer (sent, perhaps processed);
no connection (never sent)."""


# --- the publisher --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One publish attempt: the ``seq``-th notification of ``stream``, its ``attempt``-th try."""

    stream: str
    seq: int
    attempt: int
    outcome: str
    notification_id: str | None
    port: int
    began: float
    """When the request was started (``time.monotonic()``)."""


class Publisher:
    """Publishes numbered streams through the HTTP API of the instances on ``ports``, in turn
    (skipping those in :attr:`out`), retrying until each notification is accepted."""

    def __init__(self, http: httpx.AsyncClient, ports: Sequence[int], users: Sequence[str]):
        self.http = http
        self.ports = list(ports)
        self.users = list(users)
        self.out: set[int] = set()
        """Instances taken out of the rotation (a deploy drains them first)."""
        self.busy: Counter[int] = Counter()
        """Requests in flight, per instance."""
        self.attempts: dict[tuple[str, int, int], Sent] = {}
        self.accepted: dict[str, list[Sent]] = defaultdict(list)
        """Per stream, the notifications answered ``202``, in publish order."""
        self.outcomes: Counter[str] = Counter()
        self._seq: Counter[str] = Counter()
        self._turn = 0
        self._changed = anyio.Event()
        self.scope = anyio.CancelScope()
        """Cancelled when a test fails: no retry outlives it."""
        self.finished = anyio.Event()

    @property
    def total(self) -> int:
        """Notifications accepted so far."""
        return self.outcomes[ACCEPTED]

    async def more(self, count: int) -> None:
        """Wait until ``count`` more notifications are accepted."""
        goal = self.total + count
        await self.until(lambda: self.total >= goal)

    async def until(self, done: Callable[[], bool], within: float = PUBLISH_WITHIN) -> None:
        """Wait until ``done()`` holds, checked as each attempt starts and ends; fail after
        ``within`` seconds."""
        with anyio.fail_after(within):
            while not done():
                self._changed = anyio.Event()
                await self._changed.wait()

    async def run(self, stop: anyio.Event) -> None:
        """Publish at :data:`RATES` until ``stop`` is set (each lane finishes its publish,
        retries included); then set :attr:`finished`."""
        try:
            with self.scope:
                async with anyio.create_task_group() as lanes:
                    for lane in range(USER_LANES):
                        users = self.users[lane::USER_LANES]
                        targets = [(f"u:{user}", {"user": user}) for user in users]
                        lanes.start_soon(self._lane, RATES["user"] / USER_LANES, targets, stop)
                    topics = [(f"t:{topic}", {"topic": topic}) for topic in TOPICS]
                    lanes.start_soon(self._lane, RATES["topic"], topics, stop)
                    everyone = [("all", {"broadcast": True})]
                    lanes.start_soon(self._lane, RATES["all"], everyone, stop)
        finally:
            self.finished.set()

    async def _lane(
        self, rate: float, targets: list[tuple[str, dict[str, Any]]], stop: anyio.Event
    ) -> None:
        interval = 1 / rate
        next_at = anyio.current_time()
        for turn in range(100_000):  # bounded; ``stop`` ends it long before
            if stop.is_set():
                return
            stream, target = targets[turn % len(targets)]
            await self.publish(stream, target)
            next_at = max(next_at + interval, anyio.current_time())
            await anyio.sleep(max(0.0, next_at - anyio.current_time()))  # pacing

    async def publish(self, stream: str, target: dict[str, Any]) -> None:
        """Publish the next notification of ``stream`` until an instance accepts it."""
        seq = self._seq[stream]
        self._seq[stream] += 1
        delay = RETRY[0]
        with anyio.fail_after(PUBLISH_WITHIN):
            for attempt in itertools.count():
                sent = await self._attempt(stream, seq, attempt, target)
                if sent.outcome == ACCEPTED:
                    return
                await anyio.sleep(delay)  # backoff before the retry
                delay = min(delay * 2, RETRY[1])

    async def _attempt(self, stream: str, seq: int, attempt: int, target: dict[str, Any]) -> Sent:
        live = [port for port in self.ports if port not in self.out]
        port = live[self._turn % len(live)]
        self._turn += 1
        body = {"event": EVENT, **target, "data": {"stream": stream, "seq": seq, "try": attempt}}
        notification_id = None
        began = time.monotonic()
        self.busy[port] += 1
        self._changed.set()
        try:
            response = await self.http.post(f"http://{HOST}:{port}/publish", json=body)
        except httpx.ConnectError:
            outcome = UNSENT
        except httpx.TransportError:
            outcome = UNCERTAIN
        else:
            if response.status_code == 202:
                outcome, notification_id = ACCEPTED, response.json()["id"]
            else:
                assert response.status_code == 503, response.text
                assert response.json()["error"] == "unavailable", response.text
                outcome = REFUSED
        finally:
            self.busy[port] -= 1
        sent = Sent(stream, seq, attempt, outcome, notification_id, port, began)
        self.attempts[(stream, seq, attempt)] = sent
        self.outcomes[outcome] += 1
        if outcome == ACCEPTED:
            self.accepted[stream].append(sent)
        self._changed.set()
        return sent


# --- the clients ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Got:
    """A notification as the client handed it to the application."""

    seq: int
    attempt: int
    notification_id: str
    offset: int | None
    epoch: str | None


@dataclass(frozen=True)
class Resume:
    """A ``welcome`` (or a topic's ``subscribed``): when, its ``recovered`` flag, and the
    positions the client named to resume from (by stream name)."""

    at: float
    recovered: bool | None
    named: dict[str, Position]


class Watcher(Listener):
    """One user's ``NotifyClient`` (through :class:`~servers_e2e.Listener`) that records what
    it hands out, and, underneath, what the servers sent.

    The client filters out a notification at or before a position it already has, and does not
    report a topic's ``recovered`` flag to the application: :meth:`_dispatch` looks at each
    frame before the client does, so that a server that sends something twice, or says
    ``recovered: false`` for a topic, cannot go unnoticed.
    """

    def __init__(self, url: str, user: str, topics: list[str], progress: Callable[[], None]):
        self.name = user
        self.streams = (f"u:{user}", "all", *(f"t:{topic}" for topic in topics))
        """The streams the test publishes to that this client receives."""
        self.got: dict[str, list[Got]] = defaultdict(list)
        self.foreign: list[Notification] = []
        """Notifications that are none of the test's for this client's streams."""
        self.on_wire: Counter[tuple[str | None, str | None, int | None]] = Counter()
        """(stream, epoch, offset) of every notification frame the servers sent."""
        self.welcomes: list[Resume] = []
        self.topic_resumes: list[Resume] = []
        self.closed_at: list[float] = []
        self.close_codes: list[int | None] = []
        self._named: dict[str, Position] = {}
        self._named_topics: dict[str, Position] = {}
        self._progress = progress
        super().__init__(
            url, token=token(user, topics=["room:*"]), topics=topics, backoff=FAST_BACKOFF
        )

    def _record(self, change: StateChange) -> None:
        now = time.monotonic()
        if change.state is ConnectionState.CONNECTING:  # what this attempt resumes from
            self._named, self._named_topics = self.positions, self.topic_positions
        elif change.state is ConnectionState.OPEN:
            self.welcomes.append(Resume(now, change.recovered, self._named))
        elif change.state is ConnectionState.CLOSED:
            self.closed_at.append(now)
            self.close_codes.append(change.code)
        super()._record(change)
        self._progress()

    async def _dispatch(self, session: Any, frame: Any, raw: dict[str, Any]) -> None:
        if isinstance(frame, Notification):
            self.on_wire[(frame.stream, frame.epoch, frame.offset)] += 1
        elif isinstance(frame, Subscribed) and frame.recovered is not None:
            since = self._named_topics.get(frame.topic)
            named = {f"t:{frame.topic}": since} if since is not None else {}
            self.topic_resumes.append(Resume(time.monotonic(), frame.recovered, named))
        await super()._dispatch(session, frame, raw)

    async def read(self) -> None:
        """Take every notification the client hands out, until it is closed."""
        async for notification in self:
            data = notification.data
            stream = notification.stream
            if (
                notification.event != EVENT
                or not isinstance(data, dict)
                or data.get("stream") != stream
                or stream not in self.streams
            ):
                self.foreign.append(notification)
            else:
                got = Got(
                    data["seq"],
                    data["try"],
                    notification.id,
                    notification.offset,
                    notification.epoch,
                )
                self.got[stream].append(got)
            self._progress()

    def cut_since(self, moment: float) -> bool:
        """Whether a connection of this client ended after ``moment``."""
        return bool(self.closed_at) and self.closed_at[-1] >= moment

    def first_close_since(self, moment: float) -> int | None:
        """The close code of the first connection that ended after ``moment``."""
        return next(
            (
                code
                for at, code in zip(self.closed_at, self.close_codes, strict=True)
                if at >= moment
            ),
            None,
        )

    def back(self) -> bool:
        """Open, on a connection that opened after the last one ended."""
        return (
            self.state.state is ConnectionState.OPEN
            and bool(self.welcomes)
            and (not self.closed_at or self.welcomes[-1].at > self.closed_at[-1])
        )

    def back_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` to the first connection that opened after it."""
        return next((r.at - moment for r in self.welcomes if r.at > moment), None)

    def told_false(self, stream: str) -> bool:
        """Whether a resume that named ``stream`` was answered ``recovered: false``."""
        return any(
            resume.recovered is False and stream in resume.named
            for resume in (*self.welcomes, *self.topic_resumes)
        )


# --- the deployment -------------------------------------------------------------------------------


@dataclass
class Service:
    """Redis, the instances, the load balancer in front, the clients and the publisher."""

    redis: RedisServer
    instances: list[Server]
    flags: list[str]
    balancer: Balancer
    publisher: Publisher
    watchers: list[Watcher]
    request: pytest.FixtureRequest
    stop_publishing: anyio.Event = field(default_factory=anyio.Event)
    _progress: anyio.Event = field(default_factory=anyio.Event)

    def progressed(self) -> None:
        """A client changed state or took a notification."""
        self._progress.set()

    async def until(self, done: Callable[[], bool], within: float) -> bool:
        """Wait until ``done()`` holds, checked after each change of a client (a state, a
        notification); False if it did not within ``within`` seconds."""
        with anyio.move_on_after(within):
            while not done():
                self._progress = anyio.Event()
                await self._progress.wait()
            return True
        return False

    async def all_back(self, within: float = BACK_WITHIN) -> None:
        """Wait until every client is open again (after whatever cut it off)."""
        if not await self.until(lambda: all(w.back() for w in self.watchers), within):
            late = [(w.name, w.state) for w in self.watchers if not w.back()]
            raise AssertionError(f"{len(late)} clients not open within {within} s: {late[:5]}")

    async def cut_off(self, moment: float, least: int, within: float = BACK_WITHIN) -> None:
        """Wait until at least ``least`` clients lost their connection after ``moment``."""
        cut = lambda: sum(w.cut_since(moment) for w in self.watchers)  # noqa: E731
        if not await self.until(lambda: cut() >= least, within):
            raise AssertionError(f"{cut()} clients cut off within {within} s, not {least}")

    def keep_logs(self, server: Server) -> None:
        """Attach what ``server`` logged to the test's report (shown if it fails)."""
        text = server.stderr()
        if text:
            self.request.node.add_report_section("teardown", f"server :{server.port}", text)

    async def restart(self, index: int) -> tuple[float, float]:
        """Stop instance ``index`` (SIGTERM) and start it again on its port, ready; return
        the seconds each took."""
        server = self.instances[index]
        started = time.monotonic()
        self.keep_logs(server)
        code = await anyio.to_thread.run_sync(server.stop)
        # uvicorn raises the signal again once shut down: killed by SIGTERM, after its shutdown
        assert code == -signal.SIGTERM, f"instance :{server.port} exited with {code}"
        stopped = time.monotonic()
        flags, port = self.flags, server.port
        self.instances[index] = await anyio.to_thread.run_sync(
            lambda: start_serve(*flags, port=port)
        )
        await ready(self.instances[index])
        return stopped - started, time.monotonic() - stopped


async def ready(server: Server, within: float = 20.0) -> None:
    """Wait until ``/readyz`` answers 200 (subscribed to Redis: it can deliver)."""
    async with httpx.AsyncClient(timeout=2.0) as http:
        with anyio.fail_after(within):
            # a server's state signals nothing: poll it
            while (await http.get(f"{server.url}/readyz")).status_code != 200:  # noqa: ASYNC110
                await anyio.sleep(0.05)


@contextlib.asynccontextmanager
async def service(
    tmp_path: Path, request: pytest.FixtureRequest, *, persistent: bool = False
) -> AsyncIterator[Service]:
    """Start everything, open every client, and publish until the block ends; then stop the
    publisher, let the last notifications arrive (bounded), and close everything."""
    redis = RedisServer(tmp_path / "redis", persistent=persistent)
    await anyio.to_thread.run_sync(redis.start)
    instances: list[Server] = []
    try:
        flags = [
            "--jwt-secret", SECRET,
            "--api-key", API_KEY,
            "--redis-url", redis.url,
            "--redis-prefix", f"chaos-{secrets.token_hex(3)}",
        ]  # fmt: skip
        await start_instances(flags, INSTANCES, instances)
        for server in instances:
            await ready(server)
        balancer = Balancer([server.port for server in instances])
        users = [f"user{n}" for n in range(CLIENTS)]
        http = httpx.AsyncClient(
            timeout=10.0,
            limits=httpx.Limits(max_keepalive_connections=0),  # a refused connect: never sent
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        async with balancer.running(), http, anyio.create_task_group() as tasks:
            chaos = Service(
                redis,
                instances,
                flags,
                balancer,
                Publisher(http, balancer.ports, users),
                [],
                request,
            )
            chaos.watchers = [
                Watcher(
                    f"{balancer.url}/ws",
                    user,
                    [TOPICS[n % len(TOPICS)], TOPICS[(n + 1) % len(TOPICS)]],
                    chaos.progressed,
                )
                for n, user in enumerate(users)
            ]
            async with contextlib.AsyncExitStack() as clients:
                for watcher in chaos.watchers:
                    await clients.enter_async_context(watcher)
                    tasks.start_soon(watcher.read)
                await chaos.all_back()
                tasks.start_soon(chaos.publisher.run, chaos.stop_publishing)
                try:
                    yield chaos
                except BaseException:
                    chaos.publisher.scope.cancel()
                    raise
                chaos.stop_publishing.set()
                with anyio.fail_after(PUBLISH_WITHIN):
                    await chaos.publisher.finished.wait()
                await chaos.until(lambda: everything_arrived(chaos), DRAIN_WITHIN)
    finally:
        await stop_everything(request, instances, redis)


async def start_instances(flags: list[str], count: int, into: list[Server]) -> None:
    """Start ``count`` instances with ``flags``, one after the other (the box is small)."""
    for _ in range(count):
        into.append(await anyio.to_thread.run_sync(lambda: start_serve(*flags)))


async def stop_everything(
    request: pytest.FixtureRequest, instances: list[Server], redis: RedisServer
) -> None:
    """Stop the instances (what they logged goes to the test's report) and Redis."""
    for server in instances:
        logged = server.stderr()
        if logged:
            request.node.add_report_section("teardown", f"server :{server.port}", logged)
    await anyio.to_thread.run_sync(lambda: [server.stop() for server in instances])
    await anyio.to_thread.run_sync(redis.stop)


def everything_arrived(chaos: Service) -> bool:
    """Every client has the last accepted notification of each of its streams."""
    for watcher in chaos.watchers:
        for stream in watcher.streams:
            accepted = chaos.publisher.accepted.get(stream)
            got = watcher.got.get(stream)
            last = accepted[-1].notification_id if accepted else None
            if (
                last
                and (not got or got[-1].notification_id != last)
                and not watcher.told_false(stream)
            ):
                return False
    return True


# --- the audit ------------------------------------------------------------------------------------


@dataclass
class Audit:
    """What the clients received, against what the publisher was told."""

    clients: int = 0
    expected: int = 0  # accepted notifications, times the clients each was for
    received: int = 0
    lost: int = 0  # on a stream the client was never told recovered: false for
    lost_announced: int = 0  # on a stream it was told recovered: false for
    duplicates: int = 0
    wire_duplicates: int = 0
    out_of_order: int = 0
    unknown: int = 0
    refused_delivered: int = 0
    uncertain_delivered: int = 0
    unaccepted: set[Sent] = field(default_factory=set)  # attempts delivered without a 202
    twice: int = 0  # one number delivered under two ids: an attempt without 202 and its retry
    resumes: Counter[str] = field(default_factory=Counter)
    topic_resumes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.clients} clients, {self.expected} expected, {self.received} received: "
            f"lost {self.lost} (+{self.lost_announced} announced by recovered: false), "
            f"duplicates {self.duplicates} (on the wire {self.wire_duplicates}), "
            f"out of order {self.out_of_order}, unknown {self.unknown}; 503 yet delivered "
            f"{self.refused_delivered}, uncertain and delivered {self.uncertain_delivered} "
            f"({len(self.unaccepted)} publishes; same number twice: {self.twice}); "
            f"resumes {dict(self.resumes)}, topic resumes {dict(self.topic_resumes)}"
        )

    def problem(self, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(text)


def audit(chaos: Service) -> Audit:
    """Count, per client and stream, what was lost, repeated or out of order (module
    docstring)."""
    publisher = chaos.publisher
    result = Audit(clients=len(chaos.watchers))
    for watcher in chaos.watchers:
        who = watcher.name
        for resume in watcher.welcomes[1:]:
            result.resumes[str(resume.recovered)] += 1
        for resume in watcher.topic_resumes:
            result.topic_resumes[str(resume.recovered)] += 1
        repeated = sum(count - 1 for count in watcher.on_wire.values())
        result.wire_duplicates += repeated
        if repeated:
            result.problem(f"{who}: the servers sent {repeated} notification(s) twice")
        for notification in watcher.foreign:
            result.unknown += 1
            result.problem(f"{who}: unexpected {notification}")
        for stream in watcher.streams:
            audit_stream(result, publisher, watcher, stream)
    return result


def audit_stream(result: Audit, publisher: Publisher, watcher: Watcher, stream: str) -> None:
    who = f"{watcher.name} {stream}"
    got = watcher.got.get(stream, [])
    accepted = publisher.accepted.get(stream, [])
    result.expected += len(accepted)
    result.received += len(got)
    ids = Counter(g.notification_id for g in got)
    repeated = sum(count - 1 for count in ids.values())
    result.duplicates += repeated
    if repeated:
        result.problem(f"{who}: {repeated} duplicate(s)")
    for before, after in itertools.pairwise(got):
        if (after.seq, after.attempt) <= (before.seq, before.attempt) or (
            after.epoch == before.epoch and (after.offset or 0) <= (before.offset or 0)
        ):
            result.out_of_order += 1
            result.problem(f"{who}: {after} after {before}")
    for g in got:
        sent = publisher.attempts.get((stream, g.seq, g.attempt))
        if sent is None or sent.outcome == UNSENT:
            result.unknown += 1
            result.problem(f"{who}: never published: {g}")
        elif sent.outcome == ACCEPTED and sent.notification_id != g.notification_id:
            result.unknown += 1
            result.problem(f"{who}: {g} but the 202 said {sent.notification_id}")
        elif sent.outcome == REFUSED:
            result.refused_delivered += 1
            result.unaccepted.add(sent)
        elif sent.outcome == UNCERTAIN:
            result.uncertain_delivered += 1
            result.unaccepted.add(sent)
    numbers = Counter(g.seq for g in got)
    result.twice += sum(1 for count in numbers.values() if count > 1)
    received = set(ids)
    missing = [sent for sent in accepted if sent.notification_id not in received]
    if not missing:
        return
    if watcher.told_false(stream):
        result.lost_announced += len(missing)
        return
    result.lost += len(missing)
    result.problem(f"{who}: lost {len(missing)}: {[sent.seq for sent in missing][:10]}")


def assert_nothing_lost(result: Audit) -> None:
    """Everything accepted reached every client once, in order, and every resume continued."""
    assert result.problems == [], "\n".join([result.line(), *result.problems])
    assert result.lost == result.lost_announced == 0, result.line()
    assert result.duplicates == result.wire_duplicates == 0, result.line()
    assert result.out_of_order == result.unknown == 0, result.line()
    assert set(result.resumes) == {"True"}, result.line()
    assert set(result.topic_resumes) <= {"True"}, result.line()
    assert result.received >= result.expected > 0, result.line()


def assert_unaccepted_only_in_flight_at(result: Audit, moment: float) -> None:
    """A publish answered 503, or not at all, reached clients only if it was on its way when
    the failure struck (``moment``): its instance or Redis died after the notification was
    appended, before the answer. That is the ambiguity of any retried request — the retry
    is then delivered as well, under another id — and nothing else may cause it."""
    late = [sent for sent in result.unaccepted if sent.began > moment]
    assert late == [], f"delivered without a 202, though sent after the failure: {late}"


def seconds(values: Sequence[float]) -> str:
    """``median / max`` of ``values``, in seconds."""
    if not values:
        return "-"
    return f"median {statistics.median(values):.2f} s, max {max(values):.2f} s"


# --- the tests ------------------------------------------------------------------------------------


@pytest.mark.timeout(150)
async def test_kill_9_of_one_instance_its_clients_resume_elsewhere_and_lose_nothing(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    started = time.monotonic()
    async with service(tmp_path, request) as chaos:
        publisher = chaos.publisher
        await publisher.more(BEFORE)
        victim = chaos.instances[1]
        on_victim = chaos.balancer.on(victim.port)
        assert on_victim > 0, "the load balancer gave the victim no client"

        await publisher.until(lambda: publisher.busy[victim.port] > 0)  # a publish on its way
        killed = time.monotonic()
        victim.process.send_signal(signal.SIGKILL)
        await chaos.cut_off(killed, on_victim)
        await chaos.all_back()
        cut = [w for w in chaos.watchers if w.cut_since(killed)]
        back = [w.back_after(killed) or 0.0 for w in cut]
        codes = Counter(w.first_close_since(killed) for w in cut)
        await publisher.more(AFTER)

    result = audit(chaos)
    print(
        f"\nchaos kill -9: {len(cut)} of {CLIENTS} clients cut off, back after "
        f"{seconds(back)}; publishes {dict(publisher.outcomes)}; {result.line()}; "
        f"{time.monotonic() - started:.1f} s"
    )
    assert len(cut) == on_victim, f"{len(cut)} clients cut off, {on_victim} were on the victim"
    assert codes == {1006: on_victim}, codes  # no close frame: the instance just vanished
    assert_nothing_lost(result)
    assert result.refused_delivered == 0, result.line()
    assert_unaccepted_only_in_flight_at(result, killed)
    assert result.resumes["True"] >= on_victim, result.line()


@pytest.mark.timeout(150)
@pytest.mark.parametrize("persistent", [True, False], ids=["appendonly", "no-persistence"])
async def test_redis_restart_mid_stream(
    tmp_path: Path, request: pytest.FixtureRequest, persistent: bool
) -> None:
    started = time.monotonic()
    async with service(tmp_path, request, persistent=persistent) as chaos:
        publisher = chaos.publisher
        await publisher.more(BEFORE)
        before = {w.name: (w.positions, w.topic_positions) for w in chaos.watchers}

        await publisher.until(lambda: any(publisher.busy.values()))  # a publish on its way
        killed = time.monotonic()
        chaos.redis.kill()
        every_other = itertools.count()
        dropped = chaos.balancer.drop(lambda _link: next(every_other) % 2 == 0)
        refused = publisher.outcomes[REFUSED]
        await chaos.cut_off(killed, dropped)
        cut = [w for w in chaos.watchers if w.cut_since(killed)]
        # Redis stays down until the publisher was refused a number of times, and every client
        # cut off is trying to come back (an instance cannot register it without Redis: the
        # attempt waits, up to the hub's subscribe_timeout).
        await publisher.until(lambda: publisher.outcomes[REFUSED] >= refused + OUTAGE_REFUSALS)
        returning = lambda: all(w.state.state is ConnectionState.CONNECTING for w in cut)  # noqa: E731
        assert await chaos.until(returning, BACK_WITHIN), [w.changes[-3:] for w in cut]
        await anyio.to_thread.run_sync(chaos.redis.start)
        restarted = time.monotonic()
        for server in chaos.instances:
            await ready(server)
        await chaos.all_back()
        back = [w.back_after(restarted) or 0.0 for w in cut]
        await publisher.more(AFTER)

    result = audit(chaos)
    print(
        f"\nchaos Redis restart ({'appendonly' if persistent else 'no persistence'}): Redis "
        f"down {restarted - killed:.2f} s; {len(cut)} of {CLIENTS} clients cut off, back "
        f"{seconds(back)} after the restart; publishes {dict(publisher.outcomes)}; "
        f"{result.line()}; {time.monotonic() - started:.1f} s"
    )
    assert len(cut) >= dropped, f"{len(cut)} clients cut off, {dropped} dropped"
    assert_unaccepted_only_in_flight_at(result, killed)
    if persistent:
        assert_nothing_lost(result)
        assert result.resumes["True"] >= dropped, result.line()
        return
    # Without persistence every stream starts again under a new epoch. A client that resumes
    # from a position of before must be told recovered: false; one that stayed connected
    # follows its streams into their new epochs; none may miss anything it was not told about.
    assert result.problems == [], "\n".join([result.line(), *result.problems])
    assert result.lost == 0, result.line()
    assert result.duplicates == result.wire_duplicates == 0, result.line()
    assert result.out_of_order == result.unknown == 0, result.line()
    old = {
        position.epoch
        for streams, topics in before.values()
        for position in (*streams.values(), *topics.values())
    }
    stale = [
        (watcher.name, resume)
        for watcher in chaos.watchers
        for resume in (*watcher.welcomes, *watcher.topic_resumes)
        if resume.at > restarted and any(p.epoch in old for p in resume.named.values())
    ]
    assert len(stale) >= dropped, f"{len(stale)} resumes from before the restart"
    silently_true = [(name, resume) for name, resume in stale if resume.recovered is not False]
    assert silently_true == [], silently_true
    new = {g.epoch for w in chaos.watchers for got in w.got.values() for g in got[-1:]}
    assert new, "no notification after the restart"
    assert not new & old, f"epochs before {sorted(old)}, at the end {sorted(new)}"


@pytest.mark.timeout(150)
async def test_a_rolling_restart_of_three_instances_loses_nothing(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    started = time.monotonic()
    steps: list[str] = []
    async with service(tmp_path, request) as chaos:
        publisher = chaos.publisher
        await publisher.more(BEFORE)
        for index in range(INSTANCES):
            port = chaos.instances[index].port
            publisher.out.add(port)  # the load balancer's health check takes it out
            await publisher.until(lambda: publisher.busy[port] == 0)  # noqa: B023
            on_it = chaos.balancer.on(port)
            closes = sum(len(w.closed_at) for w in chaos.watchers)
            moment = time.monotonic()
            stop_took, start_took = await chaos.restart(index)
            publisher.out.discard(port)
            await chaos.cut_off(moment, on_it)
            await chaos.all_back()
            cut = [w for w in chaos.watchers if w.cut_since(moment)]
            codes = Counter(w.first_close_since(moment) for w in cut)
            assert codes == {1001: on_it}, codes  # going away: the shutdown closed them
            reconnects = sum(len(w.closed_at) for w in chaos.watchers) - closes
            steps.append(
                f"instance {index + 1}: {on_it} clients on it, stopped in {stop_took:.2f} s, "
                f"ready again {start_took:.2f} s later, {reconnects} reconnects, clients back "
                f"{seconds([w.back_after(moment) or 0.0 for w in cut])} after the SIGTERM"
            )
            await publisher.more(BEFORE)
        await publisher.more(AFTER)

    result = audit(chaos)
    print("\nchaos rolling restart: " + "; ".join(steps))
    print(
        f"chaos rolling restart: publishes {dict(publisher.outcomes)}; {result.line()}; "
        f"{time.monotonic() - started:.1f} s"
    )
    assert_nothing_lost(result)
    assert result.unaccepted == set(), result.line()  # drained first: nothing was ambiguous
    assert result.resumes["True"] >= INSTANCES, result.line()


class PausesRedisAsItResubscribes(Listener):
    """A ``NotifyClient`` that, once :attr:`armed`, pauses Redis (SIGSTOP) the moment its next
    connection has its ``welcome`` and subscribes to its topics again: Redis fails between
    the two, which no sleep could time."""

    def __init__(self, url: str, redis: RedisServer, **options: Any) -> None:
        self.redis = redis
        self.armed = False
        super().__init__(url, **options)

    async def _resubscribe(self, session: Any) -> bool:
        if self.armed:
            self.armed = False
            self.redis.pause()
        resubscribed: bool = await super()._resubscribe(session)
        return resubscribed


@pytest.mark.timeout(90)
async def test_a_client_keeps_its_topic_when_redis_fails_as_it_subscribes_again(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    redis = RedisServer(tmp_path / "redis")
    await anyio.to_thread.run_sync(redis.start)
    flags = ["--jwt-secret", SECRET, "--api-key", API_KEY, "--redis-url", redis.url]
    instances: list[Server] = []
    try:
        await start_instances(flags, 2, instances)
        first, second = instances
        open_, closed = ConnectionState.OPEN, ConnectionState.CLOSED
        balancer = Balancer([first.port, second.port])  # the reconnection lands on the second
        async with (
            balancer.running(),
            PausesRedisAsItResubscribes(
                f"{balancer.url}/ws",
                redis,
                token=token("ada", topics=["room:*"]),
                topics=["room:9"],
                backoff=FAST_BACKOFF,
            ) as client,
        ):
            await client.wait_for(lambda: client.count(ConnectionState.OPEN) == 1)
            client.armed = True
            balancer.drop()
            # The second connection's welcome came, then the answers to its subscribe: open
            # without the topic, or closed to try again.
            answered = lambda: 2 in (client.count(open_), client.count(closed))  # noqa: E731
            await client.wait_for(answered, within=30.0)
            assert balancer.placed[second.port] == 1, balancer.placed
            redis.resume()
            for server in instances:
                await ready(server)
            await client.wait_for(lambda: client.state.state is open_, within=30.0)

            # Redis answered nothing: the server said "unavailable; retry later" — not "no".
            sent = await publish(second, {"event": "after", "topic": "room:9"})
            received = None
            with anyio.move_on_after(FRAME_TIMEOUT):
                received = (await anext(client)).id
            kept = set(client.topics)
    finally:
        await stop_everything(request, instances, redis)  # a paused Redis is resumed to stop
    assert received == sent, f"a notification of its topic was lost; it keeps the topics {kept}"
