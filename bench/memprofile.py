"""Where the memory of an idle connection goes: ``python -m bench.memprofile [--variant raw]``.

Runs one server in this process with ``tracemalloc`` on (notifykit under uvicorn, or the raw
server), connects N idle clients from a load-generator process, and prints the allocation
sites that grew, per connection. RSS growth is printed too (tracemalloc sees only Python
allocations; the rest is the allocator's overhead and C-level buffers).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import tracemalloc
from pathlib import Path
from typing import Any

import uvicorn

from notifykit import Hub, JWTAuthenticator, mint_token
from notifykit.adapters.asgi import NotifyApp

from .common import API_KEY, SECRET, free_port, rss_kib
from .redisproc import RedisServer
from .rpc import Worker

HERE = Path(__file__).resolve().parent


async def serve_notifykit(redis_url: str, port: int) -> tuple[Any, asyncio.Task[None]]:
    """notifykit under uvicorn in this event loop, as bench.servers.nk runs it."""
    from notifykit.redis import RedisPropagator

    hub = Hub(RedisPropagator(redis_url, prefix="mem"))
    app = NotifyApp(hub, JWTAuthenticator(secret=SECRET), api_key=API_KEY)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="none",
        http="httptools",
        ws="websockets-sansio",
        lifespan="on",
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):  # uvicorn has no "started" event to wait on
        if server.started:
            break
        await asyncio.sleep(0.05)
    return server, task


async def serve_raw(redis_url: str, port: int) -> tuple[Any, asyncio.Task[None]]:
    """The raw server in this event loop."""
    from .servers.raw import main

    task = asyncio.create_task(main(port, redis_url, "mem"))
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        break
    return None, task


async def main_async(variant: str, count: int, top: int, frames: int) -> None:
    """Measure and print."""
    logs = HERE / "results" / "logs" / "memprofile"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with RedisServer() as redis:
        if variant == "raw":
            server, task = await serve_raw(redis.url, port)
            dialect = "raw"
        else:
            server, task = await serve_notifykit(redis.url, port)
            dialect = "notifykit"
        client = Worker("bench.loadgen", [], logs / "clients.log")
        await client.start()
        try:

            def conns(first: int, n: int) -> list[list[Any]]:
                users = [f"mem{i}" for i in range(first, first + n)]
                return [[port, u, mint_token(u, secret=SECRET, ttl=3600)] for u in users]

            await client.call("connect", dialect=dialect, conns=conns(0, 20))
            await asyncio.sleep(0.5)
            gc.collect()
            tracemalloc.start(frames)
            rss0 = rss_kib(os.getpid())
            before = tracemalloc.take_snapshot()
            info = await client.call("connect", within=120, dialect=dialect, conns=conns(20, count))
            await asyncio.sleep(1.0)
            gc.collect()
            after = tracemalloc.take_snapshot()
            rss1 = rss_kib(os.getpid())
            tracemalloc.stop()
            await client.call("close")
        finally:
            await client.stop()
            if server is not None:
                server.should_exit = True
                await asyncio.wait_for(task, 10)
            else:
                task.cancel()
    ready = max(1, info["ready"])
    stats = after.compare_to(before, "traceback")
    grown = sum(s.size_diff for s in stats)
    print(f"{variant}: {info['ready']} idle connections")
    print(f"  RSS growth:         {(rss1 - rss0) / ready:8.2f} KiB per connection")
    print(f"  traced Python heap: {grown / ready / 1024:8.2f} KiB per connection\n")
    print("by package (first non-stdlib frame; run with --frames 8 for accuracy):")
    by_owner: dict[str, int] = {}
    for stat in stats:
        owner = _owner(stat.traceback)
        by_owner[owner] = by_owner.get(owner, 0) + stat.size_diff
    for owner, size in sorted(by_owner.items(), key=lambda kv: -kv[1]):
        if abs(size) / ready >= 50:
            print(f"  {size / ready / 1024:8.2f} KiB  {owner}")
    print()
    print("by notifykit call site (innermost notifykit/ frame; the rest by package):")
    by_site: dict[str, int] = {}
    for stat in stats:
        site = _notifykit_site(stat.traceback) or _owner(stat.traceback)
        by_site[site] = by_site.get(site, 0) + stat.size_diff
    for site, size in sorted(by_site.items(), key=lambda kv: -kv[1]):
        if abs(size) / ready >= 50:
            print(f"  {size / ready / 1024:8.2f} KiB  {site}")
    print()
    print(f"top {top} allocation sites (bytes per connection, count per connection):")
    for stat in stats[:top]:
        frame = stat.traceback[-1]
        name = frame.filename.split("site-packages/")[-1].replace(str(HERE.parent) + "/", "")
        print(
            f"  {stat.size_diff / ready:8.0f} B  {stat.count_diff / ready:6.2f}x  "
            f"{name}:{frame.lineno}"
        )
        for inner in list(stat.traceback)[-2::-1][: frames - 1]:
            inner_name = inner.filename.split("site-packages/")[-1].replace(
                str(HERE.parent) + "/", ""
            )
            print(f"{'':28}<- {inner_name}:{inner.lineno}")


def _owner(traceback: tracemalloc.Traceback) -> str:
    """The package of the innermost frame outside the standard library."""
    stdlib = os.path.dirname(os.__file__)
    for frame in reversed(list(traceback)):  # innermost first
        name = frame.filename
        if "site-packages/" in name:
            return name.split("site-packages/")[1].split("/")[0]
        if name.startswith(str(HERE.parent)):
            return name[len(str(HERE.parent)) + 1 :].split("/")[0]
        if not name.startswith(stdlib) and not name.startswith("<"):
            return name
    return "stdlib: " + traceback[-1].filename.rsplit("/", 1)[-1]


def _notifykit_site(traceback: tracemalloc.Traceback) -> str | None:
    """``notifykit/<file>:<line>`` of the innermost notifykit frame, if any."""
    for frame in reversed(list(traceback)):
        if "/notifykit/" in frame.filename and "site-packages" not in frame.filename:
            return "notifykit/" + frame.filename.split("/notifykit/")[-1] + f":{frame.lineno}"
    return None


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", default="notifykit", choices=["notifykit", "raw"])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--frames", type=int, default=1, help="traceback depth to group by")
    args = parser.parse_args()
    import uvloop

    uvloop.run(main_async(args.variant, args.connections, args.top, args.frames))


if __name__ == "__main__":
    main()
