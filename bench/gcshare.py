"""How much of a connect is Python's cyclic garbage collector: ``python -m bench.gcshare``.

Runs one server in this process (notifykit under uvicorn as :mod:`bench.memprofile` does, or
``--variant floor-jwt``), times every collection with ``gc.callbacks`` (process CPU time, so
that other work on the machine does not count), and connects N authenticated clients from a
load-generator process in batches, keeping them open. Per batch it prints the process CPU per
connect, the collector's share of it, and the collections per generation: a full collection
walks every live object, so its cost grows with the connections already held.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from pathlib import Path
from typing import Any

from notifykit import mint_token

from .common import SECRET, free_port, raise_fd_limit
from .memprofile import serve_notifykit
from .redisproc import RedisServer
from .rpc import Worker

HERE = Path(__file__).resolve().parent


class GCTimer:
    """Process CPU time spent in collections, and collections per generation."""

    def __init__(self) -> None:
        self.ns = 0
        self.collections = [0, 0, 0]
        self._started = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.process_time_ns()
        else:
            self.ns += time.process_time_ns() - self._started
            self.collections[info["generation"]] += 1

    def reset(self) -> None:
        """Zero the counters."""
        self.ns = 0
        self.collections = [0, 0, 0]


async def main_async(variant: str, count: int, batches: int) -> None:
    """Serve, connect in batches, print."""
    logs = HERE / "results" / "logs" / "gcshare"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with RedisServer() as redis:
        server: Any = None
        if variant == "floor-jwt":
            from .servers.floor import main as floor_main

            task = asyncio.create_task(floor_main(port, redis.url, "gc", True, 4096))
            await asyncio.sleep(1.0)
        else:
            server, task = await serve_notifykit(redis.url, port)
        client = Worker("bench.loadgen", [], logs / "clients.log")
        await client.start()
        timer = GCTimer()
        gc.callbacks.append(timer)
        try:
            users = [f"gc{i}" for i in range(count)]
            conns = [[port, u, mint_token(u, secret=SECRET, ttl=3600)] for u in users]
            step = max(1, count // batches)
            print(f"{variant}: {count} connections in batches of {step}, kept open")
            for first in range(0, count, step):
                timer.reset()
                cpu0 = time.process_time_ns()
                info = await client.call(
                    "connect", within=300, dialect="notifykit", conns=conns[first : first + step]
                )
                cpu = time.process_time_ns() - cpu0
                ready = max(1, info["ready"])
                print(
                    f"  {first + ready:6d} open: {cpu / ready / 1e3:5.0f} µs CPU per connect, "
                    f"of which GC {timer.ns / ready / 1e3:4.0f} µs ({100 * timer.ns / cpu:3.0f} %);"
                    f" collections per generation {timer.collections}",
                    flush=True,
                )
            await client.call("close")
        finally:
            gc.callbacks.remove(timer)
            await client.stop()
            if server is not None:
                server.should_exit = True
                await asyncio.wait_for(task, 30)
            else:
                task.cancel()


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", default="notifykit", choices=["notifykit", "floor-jwt"])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()
    raise_fd_limit()
    import uvloop

    uvloop.run(main_async(args.variant, args.connections, args.batches))


if __name__ == "__main__":
    main()
