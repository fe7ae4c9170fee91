"""A load-generator process: holds many websocket connections and counts what they receive.

Driven by the orchestrator over stdin/stdout (see :mod:`bench.rpc`)::

    connect(dialect, conns=[[port, user, token], ...], concurrency)  → ready count, failures
    reset(latency)                                                    → zero every counter
    stats()                                                           → received, last receive
    counts()                                                          → per-connection counts
    latencies()                                                       → every latency (ns)
    close()                                                           → close every connection
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time
from typing import Any

import uvloop

from .common import raise_fd_limit
from .rpc import serve_commands
from .wsclient import BenchClient, request_for

_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux


class LoadGenerator:
    """The connections of one load-generator process.

    ``source`` is the local address its connections come from (``127.0.0.x``: each address
    has its own ephemeral ports, so several processes together can hold more connections to
    one server than one address has ports).
    """

    def __init__(self, source: str = "") -> None:
        self.source = source
        self.clients: list[BenchClient | None] = []
        """In the order they were asked for; None where connecting failed."""

    async def _open(self, client: BenchClient, port: int) -> None:
        loop = asyncio.get_running_loop()
        if not self.source:
            await loop.create_connection(lambda: client, "127.0.0.1", port)
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # Pick the port at connect time, by the whole 4-tuple, not at bind time.
            sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.source, 0))
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.create_connection(lambda: client, sock=sock)
        except BaseException:
            sock.close()
            raise

    async def op_connect(
        self,
        dialect: str,
        conns: list[list[Any]],
        concurrency: int = 64,
        per_connection: float = 30.0,
    ) -> dict[str, Any]:
        """Open ``conns`` (``[port, user, token]`` each), at most ``concurrency`` at a time
        (0: all at once), and wait until each is ready (welcomed)."""
        limit = asyncio.Semaphore(concurrency or len(conns) or 1)
        failures: list[str] = []
        started = time.perf_counter()
        started_ns = time.time_ns()
        finished_ns = started_ns
        opened: list[BenchClient | None] = [None] * len(conns)

        async def one(index: int, port: int, user: str, token: str) -> None:
            nonlocal finished_ns
            async with limit:
                client = BenchClient(dialect, request_for(dialect, port, user, token), token)
                try:
                    await asyncio.wait_for(self._open(client, port), per_connection)
                    await asyncio.wait_for(client.ready, per_connection)
                except (OSError, TimeoutError) as exc:
                    failures.append(f"{user}@{port}: {type(exc).__name__}: {exc}")
                    client.close()
                    return
                finished_ns = max(finished_ns, time.time_ns())
                opened[index] = client

        await asyncio.gather(*(one(i, *conn) for i, conn in enumerate(conns)))
        self.clients.extend(opened)
        return {
            "ready": sum(client is not None for client in opened),
            "failures": len(failures),
            "first_failures": failures[:5],
            "seconds": time.perf_counter() - started,
            "started_ns": started_ns,
            "finished_ns": finished_ns,
        }

    async def op_reset(self, latency: bool = False) -> dict[str, Any]:
        """Zero every counter; record latencies if ``latency``."""
        for client in self._live():
            client.reset(latency)
        return {"ok": True}

    async def op_stats(self) -> dict[str, Any]:
        """Messages received since the last reset, the last receive time, closed sockets."""
        received = 0
        last = 0
        closed = 0
        for client in self._live():
            received += client.count
            last = max(last, client.last_ns)
            closed += client.lost
        return {"received": received, "last_ns": last, "closed": closed}

    async def op_counts(self) -> list[int]:
        """Per-connection message counts, in connection order."""
        return [0 if client is None else client.count for client in self.clients]

    async def op_latencies(self) -> list[int]:
        """Every latency recorded since the last ``reset(latency=True)``, in ns."""
        values: list[int] = []
        for client in self._live():
            values.extend(client.latencies or ())
        return values

    async def op_close(self) -> dict[str, Any]:
        """Close every connection."""
        for client in self._live():
            client.close()
        self.clients.clear()
        await asyncio.sleep(0.2)
        return {"ok": True}

    def _live(self) -> list[BenchClient]:
        return [client for client in self.clients if client is not None]


def main() -> None:
    """Entry point: ``python -m bench.loadgen [--source 127.0.0.2]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", default="", help="local address to connect from")
    args = parser.parse_args()
    raise_fd_limit()
    uvloop.run(serve_commands(LoadGenerator(args.source)))


if __name__ == "__main__":
    main()
