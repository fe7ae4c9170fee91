"""Real ``redis-server`` processes for the tests: standalone servers and a Redis Cluster.

Every server listens on 127.0.0.1 on a free port (never 6379), without persistence unless asked
(``persistent=True``: an fsynced append-only file), in its own directory; a handle can stop,
kill (SIGKILL, like a crash), restart on the same port, and pause (SIGSTOP: the socket stays
open but nothing answers). Every wait is bounded. A missing
``redis-server`` makes the tests that need one fail, not skip. At the end, helpers to wait for
what a propagator delivers.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from notifykit.envelope import unstamp
from notifykit.wire import Position

HOST = "127.0.0.1"
SLOTS = 16384
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0


def required_binary(name: str = "redis-server") -> str:
    """The path of ``name`` (redis-server, redis-cli, openssl); fails the test if it is
    missing: the Redis tests must not be skipped silently."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; the Redis tests need it (apt install {name})")
    return path


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(*, with_bus: bool = False) -> int:
    """A free TCP port on 127.0.0.1; with ``with_bus``, port + 10000 is free too (a cluster
    node's bus port)."""
    if not with_bus:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((HOST, 0))
            return int(probe.getsockname()[1])
    for _ in range(200):
        port = random.randint(20000, 50000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("found no free pair of ports for a cluster node")


class RedisServer:
    """One ``redis-server`` process, started by :meth:`start` on a fixed port."""

    def __init__(
        self,
        directory: Path,
        *args: str,
        port: int | None = None,
        password: str | None = None,
        tls: bool = False,
        persistent: bool = False,
    ) -> None:
        self.directory = directory
        self.port = port if port is not None else free_port()
        self.password = password
        self.tls = tls
        self.persistent = persistent
        """With ``persistent``: an append-only file, fsynced at every write, so a restart
        (even after SIGKILL) keeps everything that was acknowledged."""
        self.certificate = directory / "cert.pem"
        """With ``tls``: the self-signed certificate clients must trust."""
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self._log = directory / "redis.log"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0`` (with the password, if any); with ``tls``,
        ``rediss://`` trusting :attr:`certificate`."""
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}{HOST}:{self.port}/0?ssl_ca_certs={self.certificate}"
        return f"redis://{auth}{HOST}:{self.port}/0"

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the process lives."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the process and wait (bounded) until it answers."""
        if self.running:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            required_binary(),
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", "always",
            "--dir", str(self.directory),
            "--logfile", "",
            *self.args,
        ]  # fmt: skip
        if self.password:
            command += ["--requirepass", self.password]
        if self.tls:
            command += self._tls_arguments()
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self._wait_until_answering()

    def _tls_arguments(self) -> list[str]:
        key = self.directory / "key.pem"
        if not self.certificate.exists():
            subprocess.run(
                [
                    required_binary("openssl"),
                    "req",
                    "-x509",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    f"/CN={HOST}",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-addext",
                    f"subjectAltName=IP:{HOST}",
                    "-keyout",
                    str(key),
                    "-out",
                    str(self.certificate),
                ],
                capture_output=True,
                timeout=30,
                check=True,
            )
        return [
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", str(self.certificate),
            "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(self.certificate),
            "--tls-auth-clients", "no",
        ]  # fmt: skip

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"redis-server exited at start-up:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if self._answers_ping():
                    return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer within {_START_TIMEOUT} s")

    def _answers_ping(self) -> bool:
        with socket.create_connection((HOST, self.port), timeout=1) as raw:
            if not self.tls:
                raw.sendall(b"PING\r\n")
                return raw.recv(64).startswith((b"+PONG", b"-NOAUTH"))
            context = ssl.create_default_context(cafile=self.certificate)
            with context.wrap_socket(raw, server_hostname=HOST) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log, for failure messages."""
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), killing it if it does not stop in time. Idempotent."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)  # a paused server cannot handle SIGTERM
        process.terminate()
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP_TIMEOUT)

    def kill(self) -> None:
        """Kill the process at once (SIGKILL), as a crash would."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(_STOP_TIMEOUT)

    def restart(self) -> None:
        """Start again on the same port and directory (a killed cluster node keeps its
        ``nodes.conf``, so it rejoins with its slots)."""
        if self.running:
            self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing is answered (a silently dead server)."""
        if self.process is None:
            raise RuntimeError("not running")
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.process is None:
            raise RuntimeError("not running")
        os.kill(self.process.pid, signal.SIGCONT)

    def command(self, *args: Any) -> Any:
        """Run one command on a short-lived blocking connection (RESP2, bytes replies)."""
        client = redis.Redis(
            host=HOST,
            port=self.port,
            password=self.password,
            protocol=2,
            socket_timeout=5,
            ssl=self.tls,
            ssl_ca_certs=str(self.certificate) if self.tls else None,
        )
        try:
            return client.execute_command(*args)
        finally:
            client.close()

    def pubsub_clients(self, name_prefix: str = "") -> list[dict[str, str]]:
        """``CLIENT LIST TYPE pubsub`` entries whose name starts with ``name_prefix``."""
        raw = self.command("CLIENT", "LIST", "TYPE", "pubsub")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        clients = []
        for line in text.splitlines():
            fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
            if fields.get("name", "").startswith(name_prefix):
                clients.append(fields)
        return clients


class RedisClusterServers:
    """``size`` masters (no replicas) forming one Redis Cluster, on free port pairs.

    Nodes time out fast (``cluster-node-timeout`` 1 s) and the cluster keeps serving the slots
    it still has while a node is down (``cluster-require-full-coverage no``).
    """

    def __init__(self, directory: Path, size: int = 3) -> None:
        self.directory = directory
        self.nodes = [
            RedisServer(
                directory / f"node-{index}",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                "--cluster-require-full-coverage",
                "no",
                port=free_port(with_bus=True),
            )
            for index in range(size)
        ]

    @property
    def url(self) -> str:
        """The URL of the first node (any node works as the seed)."""
        return self.nodes[0].url

    def start(self) -> None:
        """Start the nodes, join them (``redis-cli --cluster create``) and wait until every
        node reports ``cluster_state:ok`` with all slots assigned."""
        for node in self.nodes:
            node.start()
        result = subprocess.run(
            [
                required_binary("redis-cli"),
                "--cluster",
                "create",
                *(node.address for node in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{result.stdout.decode()}")
        self.wait_until_ok()

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()

    def wait_until_ok(self, timeout: float = 20.0) -> None:
        """Wait (bounded) until every running node sees all slots served and agrees on who
        serves them."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                maps = []
                for node in self.nodes:
                    if not node.running:
                        continue
                    info = node.command("CLUSTER", "INFO").decode()
                    if "cluster_state:ok" not in info or f"slots_ok:{SLOTS}" not in info:
                        raise RuntimeError(f"{node.address}: {info.splitlines()[:4]}")
                    maps.append(self._slot_map(node))
                if maps and all(m == maps[0] for m in maps):
                    return
                last = "nodes disagree on the slot map"
            except (redis.RedisError, RuntimeError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise RuntimeError(f"the cluster did not become ok within {timeout} s: {last}")

    @staticmethod
    def _slot_map(node: RedisServer) -> list[tuple[int, int, int]]:
        ranges = node.command("CLUSTER", "SLOTS")
        return sorted((int(r[0]), int(r[1]), int(r[2][1])) for r in ranges)

    def node_id(self, node: RedisServer) -> str:
        """The node's cluster id."""
        return str(node.command("CLUSTER", "MYID").decode())

    def owner_of(self, slot: int) -> RedisServer:
        """The node serving ``slot`` (according to the first running node)."""
        seed = next(node for node in self.nodes if node.running)
        for start, end, port in self._slot_map(seed):
            if start <= slot <= end:
                return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"no node serves slot {slot}")

    def move_slot(self, slot: int, target: RedisServer) -> None:
        """Give ``slot`` and its keys to ``target``, as a resharding does (``MIGRATE``), and
        wait until every node agrees."""
        source = self.owner_of(slot)
        target_id, source_id = self.node_id(target), self.node_id(source)
        target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while keys := source.command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            source.command("MIGRATE", HOST, target.port, "", 0, 5000, "KEYS", *keys)
        target.command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        source.command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        for node in self.nodes:
            if node is not target and node is not source:
                node.command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        self.wait_until_ok()


# --- waiting for what a propagator delivers ---------------------------------------------------


class Recorder:
    """A ``deliver`` that records ``(key, payload as published)`` and lets a test wait for one;
    ``positions`` has each delivery's place in its stream (None when unstamped)."""

    def __init__(self) -> None:
        self.log: list[tuple[str, bytes]] = []
        self.positions: list[tuple[str, Position | None]] = []
        self._changed = anyio.Event()

    def __call__(self, key: str, payload: bytes) -> None:
        position, payload = unstamp(payload)
        self.log.append((key, payload))
        self.positions.append((key, position))
        self._changed.set()

    def payloads(self, key: str) -> list[bytes]:
        """What arrived on ``key``, in order."""
        return [payload for k, payload in self.log if k == key]

    async def wait_for(self, key: str, payload: bytes, within: float = 10.0) -> None:
        """Wait until ``payload`` arrived on ``key``; fail after ``within`` seconds."""
        with anyio.fail_after(within):
            while payload not in self.payloads(key):
                self._changed = anyio.Event()
                await self._changed.wait()


async def eventually(condition: Callable[[], bool], within: float = 15.0) -> None:
    """Wait until ``condition()`` holds; fail after ``within`` seconds. It polls: the
    conditions are about servers and counters that signal nothing."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.02)


FAST_RECOVERY: dict[str, Any] = {
    "connect_timeout": 1.0,
    "command_timeout": 0.5,
    "health_check_interval": 0.2,
    "backoff_initial": 0.02,
    "backoff_max": 0.2,
}
"""Propagator tunables short enough that outages are noticed and repaired within a test."""
