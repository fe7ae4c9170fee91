"""A ``redis-server`` the benchmark owns: a free port on 127.0.0.1, no persistence."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time

from .common import free_port


def command_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Commands run between two :meth:`RedisServer.command_stats` readings (those run at
    least once), most frequent first."""
    delta = {name: count - before.get(name, 0) for name, count in after.items()}
    return dict(sorted(((n, c) for n, c in delta.items() if c), key=lambda nc: -nc[1]))


class RedisServer:
    """Start with :meth:`start`, stop with :meth:`stop` (or use it as a context manager)."""

    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        """The server's process id."""
        if self.process is None:
            raise RuntimeError("redis-server is not running")
        return self.process.pid

    def start(self, timeout: float = 10.0) -> None:
        """Start ``redis-server`` and wait until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self._dir = tempfile.mkdtemp(prefix="notifykit-bench-redis-")
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", self._dir,
                "--maxclients", "10000",
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer PING in time")

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
            self.process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def command_calls(self) -> int:
        """How many commands the server has run (``INFO commandstats``), ``INFO`` excluded."""
        return sum(self.command_stats().values())

    def command_stats(self) -> dict[str, int]:
        """How many times the server has run each command (``INFO commandstats``), ``INFO``
        excluded."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"INFO commandstats\r\n")
            data = b""
            while b"\r\n" not in data or len(data) < int(data[1 : data.index(b"\r\n")]):
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("redis-server closed the connection")
                data += chunk
            header, _, body = data.partition(b"\r\n")
            size = int(header[1:])
        calls: dict[str, int] = {}
        for line in body[:size].decode().splitlines():
            # cmdstat_subscribe:calls=12,usec=34,usec_per_call=2.83,...
            name, _, stats = line.partition(":")
            if name.startswith("cmdstat_") and name != "cmdstat_info":
                calls[name.removeprefix("cmdstat_")] = int(
                    stats.split(",", 1)[0].removeprefix("calls=")
                )
        return calls

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
