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

import asyncio
import time
from typing import Any

import uvloop

from .common import raise_fd_limit
from .rpc import serve_commands
from .wsclient import BenchClient, request_for


class LoadGenerator:
    """The connections of one load-generator process."""

    def __init__(self) -> None:
        self.clients: list[BenchClient | None] = []
        """In the order they were asked for; None where connecting failed."""

    async def op_connect(
        self, dialect: str, conns: list[list[Any]], concurrency: int = 64, within: float = 30.0
    ) -> dict[str, Any]:
        """Open ``conns`` (``[port, user, token]`` each) and wait until each is ready."""
        loop = asyncio.get_running_loop()
        limit = asyncio.Semaphore(concurrency)
        failures: list[str] = []
        started = time.perf_counter()
        opened: list[BenchClient | None] = [None] * len(conns)

        async def one(index: int, port: int, user: str, token: str) -> None:
            async with limit:
                client = BenchClient(dialect, request_for(dialect, port, user, token), token)
                try:
                    await asyncio.wait_for(
                        loop.create_connection(lambda: client, "127.0.0.1", port), within
                    )
                    await asyncio.wait_for(client.ready, within)
                except (OSError, TimeoutError) as exc:
                    failures.append(f"{user}@{port}: {type(exc).__name__}: {exc}")
                    client.close()
                    return
                opened[index] = client

        await asyncio.gather(*(one(i, *conn) for i, conn in enumerate(conns)))
        self.clients.extend(opened)
        return {
            "ready": sum(client is not None for client in opened),
            "failures": len(failures),
            "first_failures": failures[:5],
            "seconds": time.perf_counter() - started,
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
    """Entry point: ``python -m bench.loadgen``."""
    raise_fd_limit()
    uvloop.run(serve_commands(LoadGenerator()))


if __name__ == "__main__":
    main()
