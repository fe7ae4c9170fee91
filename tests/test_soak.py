"""Soak: about a thousand clients churning against real instances for a bounded time, then
nothing is left behind and nothing was lost.

Two ``notifykit serve`` instances share a real Redis. Client processes (``soak_clients.py``)
run one client per user — notifykit's ``NotifyClient`` for most, raw websockets keeping their
positions in a ``PositionBook`` for the rest — that connect to either instance, subscribe to a
topic or two, receive, disconnect (some without a close handshake) and come back resuming from
their positions, while this test publishes steadily through both instances: to single users, to
topics and to everyone, each stream's notifications numbered (``data.seq``) in publish order.

A first, shorter round warms the instances up; after each round every client leaves, and then:

* every instance holds no connection (``/healthz``) and presence counts nobody online;
* Redis holds no subscription for a departed user or topic (``PUBSUB CHANNELS``, ``NUMSUB``),
  only the instances' own subscriber connections (``CLIENT LIST TYPE pubsub``);
* no key holds more entries than the history size, and ``DBSIZE`` is bounded and no larger
  than after the warm-up (the same users and topics);
* each instance's RSS is back within 5% (or 6 MiB) of its warm-up value, measured once glibc
  handed back the memory it keeps free (``trimmed_serve.py`` runs ``notifykit serve`` with a
  SIGUSR1 handler that trims; the untrimmed RSS is printed too: tens of MiB above, which a
  trim returns, and which the next churn reuses); its open files are those it had after the
  warm-up, it holds no socket of a client, and at most a few connections to Redis;
* Python's allocator holds at most 2% more blocks than after the warm-up
  (``sys.getallocatedblocks()``, which fragmentation does not move: a leak of Python objects
  shows there first); how many objects the cyclic collector found since the previous trim is
  printed (none, today: a connection is freed by reference counting alone).

Nothing lost: every client received, on every stream, the notifications in order with no
duplicate, up to the last one published. When the server numbers its streams (``welcome``
carries ``positions``), a client whose every resume was answered ``recovered: true`` must also
have received every one in between — counted per client. On a server without history (Redis,
until the history on Redis lands) that check has nothing to check and says so; the same test
on one memory instance, which keeps history, runs it now.

The figures (RSS, fds, Redis keys, counts) are printed; run with ``-s`` to see them.
``NOTIFYKIT_SOAK_CLIENTS`` (default 1000) and ``NOTIFYKIT_SOAK_SECONDS`` (default 45) change the
size of the run.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from servers import RedisServer
from servers_e2e import (
    API_KEY,
    FRAME_TIMEOUT,
    SECRET,
    Server,
    clean_env,
    log_on_failure,
    start_command,
    start_serve,
    wait_for_health,
)
from soak_clients import ALL_EVENT, END_EVENT, TOPIC_EVENT, USER_EVENT

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

CLIENTS = int(os.environ.get("NOTIFYKIT_SOAK_CLIENTS", "1000"))
SECONDS = float(os.environ.get("NOTIFYKIT_SOAK_SECONDS", "45"))
WARM_UP_SECONDS = 10.0
WORKERS = 2  # client processes; the box has two cores, shared with the servers and Redis
TOPICS = [f"room:{n}" for n in range(8)]
HISTORY_SIZE = 50  # below what the "everyone" stream receives in a round: the bound is exercised
LIVE = (2.0, 8.0)  # seconds a client stays connected
GAP = (0.1, 1.0)  # seconds it stays away before it resumes
RATES = {"user": 80.0, "topic": 8.0, "all": 2.0}  # notifications per second, in all
RSS_MARGIN = 0.05  # RSS (after a trim) after the soak may exceed its warm-up value by this share
RSS_SLACK_KB = 6 * 1024  # ...or by this much, whichever is larger (pymalloc arenas settle)
BLOCKS_MARGIN = 0.02  # Python's allocated blocks after the soak, against the warm-up's
KEYS_PER_STREAM = 3  # what a stream may cost in Redis keys (entries, counter, epoch)
REDIS_CONNECTIONS = 8  # an instance's connections to Redis: subscriber, publisher, presence...
SOAK_CLIENTS = Path(__file__).resolve().parent / "soak_clients.py"
TRIMMED_SERVE = Path(__file__).resolve().parent / "trimmed_serve.py"


# --- publishing ---------------------------------------------------------------------------------


@dataclass
class Published:
    """How many notifications each stream was sent (its ``seq`` numbers are 0 to n - 1)."""

    users: Counter[str] = field(default_factory=Counter)
    topics: Counter[str] = field(default_factory=Counter)
    everyone: int = 0

    def total(self, stream: str, user: str) -> int:
        """How many were sent to ``stream`` as one client names it (``user``, ``all``,
        ``t:<topic>``)."""
        if stream == "user":
            return self.users[user]
        if stream == "all":
            return self.everyone
        return self.topics[stream.removeprefix("t:")]


class Publisher:
    """Publishes through the instances in turn, numbering each stream's notifications."""

    def __init__(self, http: httpx.AsyncClient, instances: Sequence[Server]) -> None:
        self.http = http
        self.instances = instances
        self.sent = Published()
        self._turn = 0

    async def _post(self, body: dict[str, Any]) -> None:
        self._turn += 1
        server = self.instances[self._turn % len(self.instances)]
        response = await self.http.post(
            f"{server.url}/publish", json=body, headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert response.status_code == 202, f"publish refused: {response.text}"

    async def to_user(self, user: str) -> None:
        seq = self.sent.users[user]
        await self._post({"event": USER_EVENT, "user": user, "data": {"seq": seq}})
        self.sent.users[user] += 1

    async def to_topic(self, topic: str) -> None:
        seq = self.sent.topics[topic]
        await self._post({"event": TOPIC_EVENT, "topic": topic, "data": {"seq": seq}})
        self.sent.topics[topic] += 1

    async def to_everyone(self, event: str = ALL_EVENT) -> None:
        await self._post({"event": event, "broadcast": True, "data": {"seq": self.sent.everyone}})
        self.sent.everyone += 1

    async def steadily(self, users: Sequence[str], seconds: float) -> None:
        """Publish at :data:`RATES` for ``seconds``: each user's and each topic's
        notifications one after another (so their order in the stream is their ``seq``)."""
        lanes = 4  # user lanes, each owning a share of the users

        async def paced(rate: float, names: Sequence[str], send: Any) -> None:
            interval = 1 / rate
            deadline = anyio.current_time() + seconds
            next_at = anyio.current_time()
            turn = 0
            while anyio.current_time() < deadline:  # bounded in time
                await send(names[turn % len(names)])
                turn += 1
                next_at += interval
                await anyio.sleep(max(0.0, next_at - anyio.current_time()))  # pacing

        async with anyio.create_task_group() as tasks:
            for lane in range(lanes):
                tasks.start_soon(paced, RATES["user"] / lanes, users[lane::lanes], self.to_user)
            tasks.start_soon(paced, RATES["topic"], TOPICS, self.to_topic)
            tasks.start_soon(paced, RATES["all"], ["everyone"], lambda _: self.to_everyone())

    async def last_round(self, users: Sequence[str]) -> None:
        """One more to every user and topic, then ``soak.end`` to everyone."""
        limit = anyio.Semaphore(16)

        async def one(send: Any, name: str) -> None:
            async with limit:
                await send(name)

        async with anyio.create_task_group() as tasks:
            for user in users:
                tasks.start_soon(one, self.to_user, user)
            for topic in TOPICS:
                tasks.start_soon(one, self.to_topic, topic)
        await self.to_everyone(END_EVENT)


# --- the client processes -----------------------------------------------------------------------


@dataclass
class Worker:
    process: Process
    lines: BufferedByteReceiveStream
    report: Path
    stderr: Path

    async def expect(self, line: bytes, within: float) -> None:
        with anyio.fail_after(within):
            got = await self.lines.receive_until(b"\n", 1024)
        assert got + b"\n" == line, f"{got!r} from a client process\n{self.stderr.read_text()}"


async def start_workers(
    instances: Sequence[Server], users: Sequence[str], seconds: float, tmp: Path, seed: int
) -> list[Worker]:
    await anyio.Path(tmp).mkdir()
    workers = []
    for n in range(WORKERS):
        config = {
            "urls": [server.ws_url + "/ws" for server in instances],
            "secret": SECRET,
            "users": list(users[n::WORKERS]),
            "topics": TOPICS,
            "seconds": seconds,
            "live": LIVE,
            "gap": GAP,
            "start_spread": 3.0,
            "seed": seed + n,
            "report": str(tmp / f"report-{n}.json"),
        }
        config_path = tmp / f"config-{n}.json"
        config_path.write_text(json.dumps(config))
        stderr = tmp / f"worker-{n}.stderr"
        with stderr.open("wb") as err:  # the process writes to its own copy
            process = await anyio.open_process(
                [sys.executable, str(SOAK_CLIENTS), str(config_path)], env=clean_env(), stderr=err
            )
        assert process.stdout is not None
        workers.append(
            Worker(
                process, BufferedByteReceiveStream(process.stdout), tmp / f"report-{n}.json", stderr
            )
        )
    return workers


# --- what the clients received ------------------------------------------------------------------


@dataclass
class Tally:
    clients: int = 0
    connections: int = 0
    resumes: Counter[str] = field(default_factory=Counter)  # "True", "False", "None"
    received: int = 0
    live_holes: int = 0  # notifications missing inside one connection
    continuous_streams: int = 0  # streams checked for "every one in between"
    expected_in_between: int = 0
    lost: int = 0
    numbered: bool = False
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.clients} clients, {self.connections} connections, resumes {dict(self.resumes)}"
            f", {self.received} notifications received, {self.live_holes} missing within a "
            f"connection; streams numbered: {self.numbered}; "
            f"{self.continuous_streams} client streams checked for gaps "
            f"({self.expected_in_between} notifications expected), {self.lost} lost"
        )


def check_clients(reports: list[dict[str, Any]], sent: Published) -> Tally:
    """Every client received every stream in order, with no duplicate, up to its last
    notification; with numbered streams and every resume recovered, with no gap either."""
    tally = Tally(clients=len(reports))
    for rec in reports:
        who = f"{rec['kind']} client {rec['user']}"
        tally.connections += rec["connections"]
        resumes = rec["recovered"][1:]  # the first connection had nothing to resume
        tally.resumes.update(str(flag) for flag in resumes)
        if rec["errors"]:
            tally.problems.append(f"{who}: {rec['errors'][:3]}")
            continue
        if rec["duplicates"]:
            tally.problems.append(f"{who}: {rec['duplicates']} duplicate notification(s)")
        if not rec["ended"]:
            tally.problems.append(f"{who}: never received {END_EVENT}")
        expected_streams = {"user", "all", *(f"t:{topic}" for topic in rec["topics"])}
        if set(rec["got"]) != expected_streams:
            tally.problems.append(f"{who}: received streams {sorted(rec['got'])}")
        for stream, got in rec["got"].items():
            tally.received += len(got)
            seqs = [seq for seq, _offset, _epoch, _session in got]
            total = sent.total(stream, rec["user"])
            if seqs != sorted(set(seqs)):
                tally.problems.append(f"{who}: {stream} out of order or repeated: {seqs}")
            if seqs[-1] != total - 1:
                tally.problems.append(f"{who}: {stream} ended at {seqs[-1]} of {total}")
            holes = live_holes(got, set(rec["reconnected"]))
            if holes:
                tally.live_holes += holes
                tally.problems.append(f"{who}: {stream} missed {holes} while connected")
            if not any(offset is not None for _seq, offset, _epoch, _session in got):
                continue
            tally.numbered = True
            pairs = itertools.pairwise(got)
            for (seq_a, offset_a, epoch_a, _), (seq_b, offset_b, epoch_b, _) in pairs:
                if epoch_a == epoch_b and offset_b - offset_a != seq_b - seq_a:
                    tally.problems.append(f"{who}: {stream} offsets do not follow publish order")
                    break
            if resumed_without_gaps(rec, stream):
                missing = sorted(set(range(seqs[0], total)) - set(seqs))
                tally.continuous_streams += 1
                tally.expected_in_between += total - seqs[0]
                tally.lost += len(missing)
                if missing:
                    tally.problems.append(f"{who}: {stream} lost {len(missing)}: {missing[:10]}")
    return tally


def live_holes(got: list[list[Any]], skip: set[int]) -> int:
    """How many notifications are missing between two received on one connection (a session
    in ``skip`` had the client reconnect by itself: not one connection). What is published to
    a stream while a connection receives it reaches it, in order, with or without history."""
    holes = 0
    for (seq_a, _, _, session_a), (seq_b, _, _, session_b) in itertools.pairwise(got):
        if session_a == session_b and session_a not in skip:
            holes += max(0, seq_b - seq_a - 1)
    return holes


def resumed_without_gaps(rec: dict[str, Any], stream: str) -> bool:
    """Whether the client resumed ``stream`` every time it reconnected, and the server said
    nothing was missed: then it must have received every notification in between."""
    if stream in ("user", "all"):
        return all(flag is True for flag in rec["recovered"][1:])
    if rec["kind"] != "raw":  # a new NotifyClient cannot be given topic positions
        return bool(rec["connections"] == 1)
    topic = stream.removeprefix("t:")
    return all(flag is True for flag in rec["topic_recovered"].get(topic, []))


# --- what the instances and Redis hold ------------------------------------------------------------


@dataclass
class Heap:
    """A ``trimmed <n>: ...`` line of ``trimmed_serve.py``."""

    blocks: int
    """``sys.getallocatedblocks()``: Python objects held, whatever the fragmentation."""
    collected: int
    """Objects the cyclic collector found unreachable since the previous trim."""

    @classmethod
    def parse(cls, line: str) -> Heap:
        match = re.fullmatch(
            r"trimmed \d+: (\d+) blocks, (\d+) collected since the last trim", line
        )
        assert match is not None, line
        return cls(int(match[1]), int(match[2]))


@dataclass
class Usage:
    """What one instance process holds once every client left."""

    rss_kb: int
    """VmRSS as it is."""
    live_kb: int | None
    """VmRSS once glibc handed back the memory it kept free (``trimmed_serve.py``)."""
    heap: Heap | None
    """What Python's allocator holds then, and what the cyclic collector had found."""
    files: Counter[str]
    """Open file descriptors other than TCP sockets, by kind (pipe, eventpoll, path...)."""
    listeners: int
    redis_connections: int
    other_connections: int
    """TCP sockets to anything but Redis: what a client left behind."""

    @property
    def fds(self) -> int:
        return (
            sum(self.files.values())
            + self.listeners
            + self.redis_connections
            + self.other_connections
        )

    def line(self) -> str:
        live = "" if self.live_kb is None else f" ({self.live_kb / 1024:.1f} MiB after a trim)"
        if self.heap is not None:
            live += (
                f" [{self.heap.blocks} Python blocks; the collector found "
                f"{self.heap.collected} unreachable objects since the last trim]"
            )
        return (
            f"RSS {self.rss_kb / 1024:.1f} MiB{live}, {self.fds} fds "
            f"({self.redis_connections} to Redis, {self.other_connections} to clients)"
        )


@dataclass
class Footprint:
    usage: list[Usage]
    redis_keys: int | None = None
    redis_types: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        keys = (
            ""
            if self.redis_keys is None
            else f"; Redis: {self.redis_keys} keys {dict(sorted(self.redis_types.items()))}"
        )
        return "; ".join(f"instance {n + 1}: {u.line()}" for n, u in enumerate(self.usage)) + keys


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def tcp_sockets() -> dict[str, tuple[int, int, str]]:
    """Every TCP socket on this machine: inode → (local port, remote port, state in hex)."""
    sockets = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            sockets[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16),
                              state)  # fmt: skip
    return sockets


LISTEN = "0A"


async def usage(server: Server, redis_port: int | None, trim: bool) -> Usage:
    """What ``server``'s process holds; with ``trim``, also its RSS after a trim."""
    pid = server.process.pid
    rss = rss_kb(pid)
    live = heap = None
    if trim:
        trims = server.stderr().count("trimmed ") + 1
        os.kill(pid, signal.SIGUSR1)
        text = await poll("the instance trimmed its heap", lambda: anyio.to_thread.run_sync(
            server.stderr), lambda text: f"trimmed {trims}:" in text)  # fmt: skip
        live = rss_kb(pid)
        heap = Heap.parse(next(line for line in text.splitlines()
                               if line.startswith(f"trimmed {trims}:")))  # fmt: skip
    files: Counter[str] = Counter()
    listeners = to_redis = other = 0
    sockets = tcp_sockets()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue  # closed meanwhile
        if not target.startswith("socket:["):
            files[target.split(":[")[0] if target.startswith("pipe:") else target] += 1
            continue
        found = sockets.get(target.removeprefix("socket:[").removesuffix("]"))
        if found is None:
            files["socket (not TCP)"] += 1
        elif found[2] == LISTEN:
            listeners += 1
        elif found[1] == redis_port:
            to_redis += 1
        else:
            other += 1
    return Usage(rss, live, heap, files, listeners, to_redis, other)


async def api_get(server: Server, path: str) -> Any:
    async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
        response = await http.get(server.url + path, headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 200, response.text
    return response.json()


async def poll(what: str, probe: Any, want: Any, within: float = 30.0) -> Any:
    """Call ``probe()`` until ``want(value)``; fail with the last value (bounded: these are
    states that signal nothing)."""
    value = None
    with anyio.move_on_after(within):
        while not want(value := await probe()):  # noqa: ASYNC110 - these states signal nothing
            await anyio.sleep(0.1)
        return value
    raise AssertionError(f"{what} never held within {within} s; last: {value}")


async def everyone_gone(
    instances: Sequence[Server],
    redis: RedisServer | None,
    prefix: str,
    users: Sequence[str],
    *,
    trim: bool = False,
) -> Footprint:
    """Wait until no trace of the clients is left; what the instances and Redis hold then."""
    for server in instances:
        await wait_for_health(server, lambda h: (h["connections"], h["users"]) == (0, 0), within=30)
        await poll(
            "presence: nobody online",
            lambda s=server: api_get(s, "/presence"),
            lambda body: body == {"online": 0},
        )
    redis_port = redis.port if redis is not None else None
    footprint = Footprint([await usage(server, redis_port, trim) for server in instances])
    for server, used in zip(instances, footprint.usage, strict=True):
        assert used.other_connections == 0, f"instance :{server.port} {used.line()}"
        assert used.listeners == 1, used.line()
        assert used.redis_connections <= REDIS_CONNECTIONS, used.line()
    if redis is None:
        return footprint

    async def channels() -> list[bytes]:
        return list(redis.command("PUBSUB", "CHANNELS", f"{prefix}:*"))

    await poll("Redis: no channel subscribed", channels, lambda found: found == [])
    numsub = redis.command("PUBSUB", "NUMSUB", *(f"{prefix}:u:{user}" for user in users))
    assert set(numsub[1::2]) == {0}, "a departed user's channel is still subscribed"
    pubsub = redis.pubsub_clients()
    assert len(pubsub) <= len(instances), pubsub  # one subscriber connection per instance
    assert all((c["sub"], c.get("ssub", "0")) == ("0", "0") for c in pubsub), pubsub
    types: Counter[str] = Counter()
    for raw_key in redis.command("KEYS", f"{prefix}:*"):
        key = raw_key.decode()
        kind = redis.command("TYPE", key).decode()
        types[kind] += 1
        size = {"stream": "XLEN", "list": "LLEN", "zset": "ZCARD", "set": "SCARD", "hash": "HLEN"}
        if kind in size:
            length = redis.command(size[kind], key)
            assert length <= HISTORY_SIZE, f"{key} ({kind}) holds {length} > {HISTORY_SIZE}"
        assert ":presence:" not in key or ":u:" not in key, f"presence left behind: {key}"
    footprint.redis_keys = redis.command("DBSIZE")
    footprint.redis_types = dict(types)
    streams = len(users) + len(TOPICS) + 2  # users, topics, "authenticated", "everyone"
    assert footprint.redis_keys <= KEYS_PER_STREAM * streams + 16, footprint.line()
    return footprint


# --- one round ------------------------------------------------------------------------------------


async def churn(
    instances: Sequence[Server], users: Sequence[str], seconds: float, tmp: Path, seed: int
) -> Tally:
    """One round: the clients churn for ``seconds`` while notifications are published, then
    take their last notifications and leave."""
    workers = await start_workers(instances, users, seconds, tmp, seed)
    try:
        async with httpx.AsyncClient(
            timeout=FRAME_TIMEOUT * 6, limits=httpx.Limits(max_connections=32)
        ) as http:
            publisher = Publisher(http, instances)
            await publisher.steadily(users, seconds)
            for worker in workers:  # every client's last connection is open
                await worker.expect(b"ready\n", within=120)
            await publisher.last_round(users)
        for worker in workers:
            await worker.expect(b"done\n", within=90)
            with anyio.fail_after(30):
                assert await worker.process.wait() == 0, worker.stderr.read_text()
    finally:
        for worker in workers:
            if worker.process.returncode is None:
                worker.process.kill()
                await worker.process.wait()
    reports = [rec for worker in workers for rec in json.loads(worker.report.read_text())]
    return check_clients(reports, publisher.sent)


def assert_clients(tally: Tally, round_name: str) -> None:
    print(f"\n{round_name}: {tally.line()}")
    assert not tally.problems, f"{len(tally.problems)} problem(s): {tally.problems[:20]}"
    if tally.numbered:
        resumes = sum(tally.resumes.values())
        assert tally.resumes["True"] >= 0.95 * resumes, tally.resumes  # within retention
        assert tally.continuous_streams > 0
        assert tally.lost == 0
    else:
        print(f"{round_name}: the server numbers no stream: no resume to check for gaps")


# --- the tests ------------------------------------------------------------------------------------


def serve_flags(*extra: str) -> list[str]:
    return [
        "--jwt-secret", SECRET,
        "--api-key", API_KEY,
        "--history-size", str(HISTORY_SIZE),
        *extra,
    ]  # fmt: skip


def start_measured(*flags: str) -> Server:
    """``notifykit serve <flags>`` on a free port, through ``trimmed_serve.py`` (SIGUSR1: hand
    back the memory glibc keeps free, so that RSS says what the instance still uses)."""
    command = [sys.executable, str(TRIMMED_SERVE), "serve", "--log-level", "warning", *flags]
    return start_command(
        lambda port: [*command, "--port", str(port)], env=clean_env(), health_path="/healthz"
    )


@pytest.fixture
def users() -> list[str]:
    return [f"soak-{n}" for n in range(CLIENTS)]


@pytest.mark.redis
@pytest.mark.timeout(SECONDS + WARM_UP_SECONDS + 300)
async def test_two_instances_on_redis_after_churning_clients_hold_nothing_and_lost_nothing(
    request: pytest.FixtureRequest, redis_server: RedisServer, users: list[str], tmp_path: Path
) -> None:
    prefix = f"soak-{secrets.token_hex(3)}"
    instances: list[Server] = []
    try:
        for n in (1, 2):
            flags = ["--redis-url", redis_server.url, "--redis-prefix", prefix,
                     "--instance-id", f"{prefix}-{n}", "--presence-ttl", "5"]  # fmt: skip
            instances.append(start_measured(*serve_flags(*flags)))
        with log_on_failure(request, *instances):
            tally = await churn(instances, users, WARM_UP_SECONDS, tmp_path / "warm", 1)
            assert_clients(tally, "warm-up")
            warm = await everyone_gone(instances, redis_server, prefix, users, trim=True)
            print(f"after the warm-up: {warm.line()}")

            tally = await churn(instances, users, SECONDS, tmp_path / "soak", 2)
            assert_clients(tally, f"soak ({SECONDS:.0f} s)")
            after = await everyone_gone(instances, redis_server, prefix, users, trim=True)
            print(f"after the soak:    {after.line()}")

            for server, before, now in zip(instances, warm.usage, after.usage, strict=True):
                assert before.heap is not None
                assert now.heap is not None
                allowed_blocks = int(before.heap.blocks * (1 + BLOCKS_MARGIN))
                assert now.heap.blocks <= allowed_blocks, (
                    f"instance :{server.port} holds {before.heap.blocks} Python blocks after the "
                    f"warm-up, {now.heap.blocks} after the soak (at most {allowed_blocks})"
                )
                assert before.live_kb is not None
                assert now.live_kb is not None
                allowed = before.live_kb + max(RSS_SLACK_KB, int(before.live_kb * RSS_MARGIN))
                assert now.live_kb <= allowed, (
                    f"instance :{server.port} uses {before.live_kb} kB after the warm-up, "
                    f"{now.live_kb} kB after the soak (at most {allowed} kB allowed)"
                )
                assert now.files == before.files, (before.files, now.files)
            assert after.redis_keys is not None
            assert warm.redis_keys is not None
            assert after.redis_keys <= warm.redis_keys + 2 * len(instances)
            for server in instances:
                assert "Traceback" not in server.stderr(), server.stderr()
    finally:
        for server in instances:
            server.stop()


@pytest.mark.timeout(200)
async def test_one_memory_instance_after_churning_clients_resumed_with_nothing_lost(
    request: pytest.FixtureRequest, users: list[str], tmp_path: Path
) -> None:
    """The same churn, smaller and shorter, on an instance whose history is in memory: the
    "nothing lost" check has streams to check today."""
    instance = start_serve(*serve_flags())
    try:
        with log_on_failure(request, instance):
            tally = await churn([instance], users[: CLIENTS // 3], 15.0, tmp_path / "memory", 3)
            assert_clients(tally, "memory")
            assert tally.numbered, "the memory instance numbers its streams"
            footprint = await everyone_gone([instance], None, "", [])
            print(f"after the churn: {footprint.line()}")
            assert "Traceback" not in instance.stderr(), instance.stderr()
    finally:
        instance.stop()
