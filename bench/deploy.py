"""One deployment under test: K server processes of a variant, load-generator processes
holding M websocket connections spread over them, and a publisher process — plus the
measurement of one round (what was published, what arrived, and the CPU it cost)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import cpu_ns, free_port, percentile, rss_kib
from .rpc import Worker


@dataclass(frozen=True)
class Variant:
    """A server design under test, and how its clients and publisher speak to it."""

    name: str
    module: str
    server_args: tuple[str, ...] = ()
    dialect: str = "notifykit"
    publisher: str = "notifykit"
    needs_redis_propagator: bool = False
    connect_concurrency: int = 64
    """How many clients may be connecting at once."""
    description: str = ""


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "floor",
            "bench.servers.floor",
            dialect="raw",
            publisher="raw",
            description="the floor: websockets server + a Redis subscriber that is a plain "
            "asyncio.Protocol feeding hiredis.Reader, per-user channels, payload bytes "
            "forwarded untouched with websockets.broadcast, no auth",
        ),
        Variant(
            "floor-jwt",
            "bench.servers.floor",
            ("--jwt",),
            publisher="raw",
            description="the floor, verifying a JWT (PyJWT, HS256) at connect as notifykit's "
            "clients present it (Authorization header), answering with a welcome frame",
        ),
        Variant(
            "raw",
            "bench.servers.raw",
            dialect="raw",
            publisher="raw",
            description="redis.asyncio pub/sub + websockets server, per-user channels, "
            "bytes forwarded untouched with websockets.broadcast, no auth (the ceiling)",
        ),
        Variant(
            "asgi",
            "bench.servers.asgi",
            dialect="raw",
            publisher="raw",
            description="diagnostic: raw's design as a bare ASGI app under notifykit's uvicorn "
            "stack, awaiting each connection's send in the reader (the serving stack's floor)",
        ),
        Variant(
            "notifykit",
            "bench.servers.nk",
            needs_redis_propagator=True,
            description="Hub(RedisPropagator(url), presence=RedisPresence(url)) + "
            "NotifyApp(hub, JWTAuthenticator) under uvicorn (uvloop, httptools, "
            "websockets-sansio), real JWTs: as `notifykit serve --redis-url` deploys it",
        ),
        Variant(
            "notifykit-nohistory",
            "bench.servers.nk",
            ("--history-size", "0"),
            publisher="notifykit-nohistory",
            needs_redis_propagator=True,
            description="notifykit without history (--history-size 0): what history costs",
        ),
        Variant(
            "nk-uvicorn-websockets",
            "bench.servers.nk",
            ("--ws", "websockets"),
            needs_redis_propagator=True,
            description="notifykit under uvicorn with ws=websockets (its legacy-API "
            "implementation) instead of websockets-sansio",
        ),
        Variant(
            "nk-uvicorn-wsproto",
            "bench.servers.nk",
            ("--ws", "wsproto"),
            needs_redis_propagator=True,
            description="notifykit under uvicorn with ws=wsproto instead of websockets-sansio",
        ),
        Variant(
            "notifykit-websockets",
            "bench.servers.nk",
            ("--adapter", "websockets"),
            needs_redis_propagator=True,
            description="the same hub and JWTs on notifykit.adapters.websockets.serve (a "
            "plain websockets server with uvloop, raw's serving stack) instead of uvicorn",
        ),
        Variant(
            "notifykit-channels",
            "bench.servers.nk",
            ("--adapter", "channels"),
            needs_redis_propagator=True,
            description="the same hub and JWTs as a Django Channels app (ProtocolTypeRouter, "
            "AuthMiddlewareStack, NotifyConsumer, ChannelsUserAuthenticator with JWT "
            "fallback) under the same uvicorn stack",
        ),
        Variant(
            "single-channel",
            "bench.servers.nk",
            ("--single-channel",),
            publisher="single-channel",
            needs_redis_propagator=True,
            description="notifykit with a bench-only propagator: every instance receives "
            "every message on one channel and filters (NestJS original, python-socketio)",
        ),
        Variant(
            "socketio",
            "bench.servers.sio",
            dialect="socketio",
            publisher="socketio",
            description="python-socketio AsyncServer + AsyncRedisManager (room per user) "
            "under the same uvicorn stack; JWT in the Socket.IO auth payload",
        ),
        Variant(
            "broadcaster",
            "bench.servers.bcast",
            dialect="broadcaster",
            publisher="broadcaster",
            # broadcaster.Broadcast.subscribe() races: two connections subscribing to a channel
            # nobody holds yet both call the backend, and the second replaces the first's
            # queue, which then never receives anything. Connect one at a time to avoid it.
            connect_concurrency=1,
            description="encode/broadcaster (Redis backend) + Starlette WebSocket, one "
            "channel per user plus one broadcast channel, under the same uvicorn stack",
        ),
    )
}


def parse_variants(parser: argparse.ArgumentParser, text: str) -> list[str]:
    """The comma-separated variant names of ``text`` (``parser.error`` for an unknown one)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants: {unknown}")
    return names


@dataclass
class Conn:
    """One client connection of the deployment: its user and the instance it goes to."""

    user_index: int
    user: str
    instance: int
    token: str = ""


def spread(users: list[str], instances: int, tokens: dict[str, str]) -> list[Conn]:
    """Users alternately get one and two connections; connection ``j`` of user ``u`` goes to
    instance ``(u // 2 + j) % K``: every instance holds the same share, and a user with two
    connections spans two instances (as behind a load balancer) whenever K > 1."""
    conns = []
    for index, user in enumerate(users):
        for j in range(1 + index % 2):
            conns.append(Conn(index, user, (index // 2 + j) % instances, tokens.get(user, "")))
    return conns


class ServerProcess:
    """One server instance (``python -m <module> --port P --redis-url U``)."""

    def __init__(self, variant: Variant, redis_url: str, prefix: str, log: Path) -> None:
        self.variant = variant
        self.redis_url = redis_url
        self.prefix = prefix
        self.port = free_port()
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        """The server's process id."""
        if self.process is None:
            raise RuntimeError("server not running")
        return self.process.pid

    async def start(self, within: float = 30.0) -> None:
        """Start it and wait until its port accepts connections."""
        args = ["--port", str(self.port), "--redis-url", self.redis_url, "--prefix", self.prefix]
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                self.variant.module,
                *args,
                *self.variant.server_args,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"{self.variant.name} server exited; see {self.log}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise RuntimeError(f"{self.variant.name} server did not listen in time; see {self.log}")

    async def stop(self) -> None:
        """SIGINT (graceful), then SIGKILL after 10 s."""
        process = self.process
        self.process = None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


@dataclass
class Round:
    """What one measured round saw."""

    kind: str
    notifications: int
    expected: int
    delivered: int
    lost: int
    extra: int
    seconds: float
    server_cpu_ns: list[int]
    redis_cpu_ns: int
    publisher_cpu_ns: int
    clients_cpu_ns: int
    closed_connections: int
    publish: dict[str, Any]
    latency_ms: dict[str, float] = field(default_factory=dict)

    @property
    def deliveries_per_s(self) -> float:
        """Deliveries per second over the round (first publish → last receive)."""
        return self.delivered / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_delivery(self) -> float:
        """Server CPU (all instances) per delivered message, µs."""
        return sum(self.server_cpu_ns) / max(1, self.delivered) / 1000

    @property
    def cpu_us_per_notification(self) -> float:
        """Server CPU (all instances) per published notification, µs."""
        return sum(self.server_cpu_ns) / max(1, self.notifications) / 1000

    def summary(self) -> dict[str, Any]:
        """The round as JSON-ready data."""
        return {
            "kind": self.kind,
            "notifications": self.notifications,
            "expected_deliveries": self.expected,
            "delivered": self.delivered,
            "lost": self.lost,
            "extra": self.extra,
            "seconds": round(self.seconds, 4),
            "deliveries_per_s": round(self.deliveries_per_s, 1),
            "server_cpu_us_per_delivery": round(self.cpu_us_per_delivery, 3),
            "server_cpu_us_per_notification": round(self.cpu_us_per_notification, 3),
            "server_cpu_s_per_instance": [round(ns / 1e9, 4) for ns in self.server_cpu_ns],
            "redis_cpu_us_per_delivery": round(self.redis_cpu_ns / max(1, self.delivered) / 1e3, 3),
            "publisher_cpu_us_per_notification": round(
                self.publisher_cpu_ns / max(1, self.notifications) / 1e3, 3
            ),
            "clients_cpu_us_per_delivery": round(
                self.clients_cpu_ns / max(1, self.delivered) / 1e3, 3
            ),
            "closed_connections": self.closed_connections,
            "publish": self.publish,
            "latency_ms": self.latency_ms,
        }


class Deployment:
    """K instances of a variant, ``clients`` load-generator processes and a publisher."""

    def __init__(
        self,
        variant: Variant,
        redis_url: str,
        redis_pid: int,
        instances: int,
        logs: Path,
        clients: int = 2,
        publisher: bool = True,
        prefix: str = "bench",
        client_sources: list[str] | None = None,
    ) -> None:
        self.variant = variant
        self.redis_url = redis_url
        self.redis_pid = redis_pid
        self.servers = [
            ServerProcess(variant, redis_url, prefix, logs / f"{variant.name}-server{i}.log")
            for i in range(instances)
        ]
        sources = client_sources or []
        self.clients = [
            Worker(
                "bench.loadgen",
                ["--source", sources[i]] if i < len(sources) else [],
                logs / f"{variant.name}-clients{i}.log",
            )
            for i in range(clients)
        ]
        self.publisher = (
            Worker(
                "bench.publisher",
                ["--kind", variant.publisher, "--redis-url", redis_url, "--prefix", prefix],
                logs / f"{variant.name}-publisher.log",
            )
            if publisher
            else None
        )
        self.conns: list[Conn] = []
        self.users: list[str] = []

    async def start(self) -> None:
        """Start every process."""
        await asyncio.gather(*(server.start() for server in self.servers))
        workers = [*self.clients, *([self.publisher] if self.publisher else [])]
        await asyncio.gather(*(worker.start() for worker in workers))

    async def stop(self) -> None:
        """Stop every process (clients first, so servers see clean closes)."""
        for client in self.clients:
            with contextlib.suppress(Exception):  # a dead worker is stopped below anyway
                await client.call("close", within=30)
        workers = [*self.clients, *([self.publisher] if self.publisher else [])]
        await asyncio.gather(*(worker.stop() for worker in workers))
        await asyncio.gather(*(server.stop() for server in self.servers))

    async def __aenter__(self) -> Deployment:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- connections ----------------------------------------------------------------------

    async def connect(
        self, conns: list[Conn], concurrency: int | None = None, within: float = 30.0
    ) -> dict[str, Any]:
        """Open ``conns`` (added to those already open), spread over the client processes,
        at most ``concurrency`` at a time per process (default: the variant's; 0: all at
        once). ``span_seconds`` is from the first attempt in any process to the last
        connection welcomed in any; ``connects_per_s`` is ready connections over it."""
        if concurrency is None or self.variant.connect_concurrency == 1:
            concurrency = self.variant.connect_concurrency
        start = len(self.conns)
        share: list[list[list[Any]]] = [[] for _ in self.clients]
        for offset, conn in enumerate(conns):
            port = self.servers[conn.instance].port
            share[(start + offset) % len(self.clients)].append([port, conn.user, conn.token])
        calls = [
            client.call(
                "connect",
                within=max(180, 3 * within),
                dialect=self.variant.dialect,
                conns=part,
                concurrency=concurrency,
                per_connection=within,
            )
            for client, part in zip(self.clients, share, strict=True)
            if part
        ]
        if concurrency == 1:  # one connection at a time across every client process
            results = [await call for call in calls]
        else:
            results = await asyncio.gather(*calls)
        self.conns.extend(conns)
        self.users = list(dict.fromkeys(c.user for c in self.conns))
        ready = sum(r["ready"] for r in results)
        first_ns = min(r["started_ns"] for r in results)
        span = (max(r["finished_ns"] for r in results) - first_ns) / 1e9
        return {
            "ready": ready,
            "failures": sum(r["failures"] for r in results),
            "first_failures": [f for r in results for f in r["first_failures"]][:5],
            "seconds": max(r["seconds"] for r in results),
            "span_seconds": span,
            "connects_per_s": round(ready / span, 1) if span > 0 else float("nan"),
        }

    def _in_client_order(self) -> list[list[Conn]]:
        order: list[list[Conn]] = [[] for _ in self.clients]
        for index, conn in enumerate(self.conns):
            order[index % len(self.clients)].append(conn)
        return order

    # --- measurement ----------------------------------------------------------------------

    async def round(
        self,
        kind: str,
        command: str,
        args: dict[str, Any],
        expected: dict[str, int] | int,
        latency: bool = False,
        max_seconds: float = 120.0,
        stall: float = 5.0,
    ) -> Round:
        """Publish (``command`` on the publisher) and wait until every expected delivery
        arrived, or nothing arrived for ``stall`` seconds after publishing ended.

        ``expected`` is per connection: one number for all, or a number per user.
        """
        if self.publisher is None:
            raise RuntimeError("this deployment has no publisher")
        await asyncio.gather(*(c.call("reset", latency=latency) for c in self.clients))
        per_conn = [
            expected if isinstance(expected, int) else expected.get(conn.user, 0)
            for conn in self.conns
        ]
        expected_total = sum(per_conn)
        others = [self.redis_pid, self.publisher.pid, *(c.pid for c in self.clients)]
        server_cpu0 = [cpu_ns(s.pid) for s in self.servers]
        other_cpu0 = [cpu_ns(pid) for pid in others]

        publishing = asyncio.create_task(self.publisher.call(command, within=max_seconds, **args))
        started = time.monotonic()
        received = 0
        last_ns = 0
        closed = 0
        progress_at = started
        while True:
            await asyncio.sleep(0.02)
            stats = await asyncio.gather(*(c.call("stats") for c in self.clients))
            now_received = sum(s["received"] for s in stats)
            last_ns = max(s["last_ns"] for s in stats)
            closed = sum(s["closed"] for s in stats)
            now = time.monotonic()
            if now_received != received:
                received = now_received
                progress_at = now
            if publishing.done():
                if received >= expected_total:
                    break
                if now - progress_at > stall:
                    break
            if now - started > max_seconds:
                break
        server_cpu = [cpu_ns(s.pid) - c0 for s, c0 in zip(self.servers, server_cpu0, strict=True)]
        other_cpu = [cpu_ns(pid) - c0 for pid, c0 in zip(others, other_cpu0, strict=True)]
        publish = await publishing

        counts_by_client = await asyncio.gather(*(c.call("counts") for c in self.clients))
        lost = extra = delivered = 0
        for conns, counts in zip(self._in_client_order(), counts_by_client, strict=True):
            for conn, got in zip(conns, counts, strict=True):
                want = expected if isinstance(expected, int) else expected.get(conn.user, 0)
                delivered += got
                lost += max(0, want - got)
                extra += max(0, got - want)
        latency_ms: dict[str, float] = {}
        if latency:
            values = sorted(
                v
                for part in await asyncio.gather(*(c.call("latencies") for c in self.clients))
                for v in part
            )
            latency_ms = {
                "samples": len(values),
                **{
                    name: round(percentile(values, q) / 1e6, 3)
                    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
                },
            }
        return Round(
            kind=kind,
            notifications=int(publish["published"]),
            expected=expected_total,
            delivered=delivered,
            lost=lost,
            extra=extra,
            seconds=max(0.0, (last_ns - publish["first_ns"]) / 1e9),
            server_cpu_ns=server_cpu,
            redis_cpu_ns=other_cpu[0],
            publisher_cpu_ns=other_cpu[1],
            clients_cpu_ns=sum(other_cpu[2:]),
            closed_connections=closed,
            publish=publish,
            latency_ms=latency_ms,
        )

    def targeted_expectation(self, n: int, users: list[str] | None = None) -> dict[str, int]:
        """Notifications per user when ``n`` go round-robin over ``users`` (default: all)."""
        users = self.users if users is None else users
        count = len(users)
        return {user: n // count + (1 if i < n % count else 0) for i, user in enumerate(users)}

    def users_only_on(self, instance: int) -> list[str]:
        """The users whose every connection is on ``instance``."""
        where: dict[str, set[int]] = {}
        for conn in self.conns:
            where.setdefault(conn.user, set()).add(conn.instance)
        return [user for user, places in where.items() if places == {instance}]

    def server_rss_kib(self) -> list[int]:
        """Every instance's resident set size."""
        return [rss_kib(s.pid) for s in self.servers]
