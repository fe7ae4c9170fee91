"""Micro-benchmark of the Redis propagator's two hot paths: ``python -m bench.redis_micro``.

* **publish** — ``RedisPropagator.publish`` against a real ``redis-server`` (started here on a
  free port of 127.0.0.1): awaited one after another (one round trip each), from 100
  concurrent tasks (coalesced into pipelines), and one call to 1,000 keys. Figures are
  publishes (``PUBLISH`` commands) per second, and this process's CPU time per publish (the
  figure that depends least on what else the machine runs).
* **reader** — CPU time this process spends per message received and handed to ``deliver``:
  a separate process pipelines ``PUBLISH`` commands to a channel the propagator subscribed to,
  and this process's CPU time is read from the first message to the last.

Runs on uvloop, like the servers. Figures are medians (and bests) of ``--repeat`` rounds; the
machine is shared, so compare runs made one after another on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import uvloop

from notifykit.redis import RedisPropagator

from .redisproc import RedisServer

PAYLOAD = b'{"type":"notification","id":"0000000000000000","event":"order.shipped",' + (
    b'"data":{"order":12345,"status":"shipped","items":[1,2,3]}}'
)

_FLOOD = """
import socket, sys
port, channel, count = int(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3])
payload = sys.stdin.buffer.read()
command = b"*3\\r\\n$7\\r\\nPUBLISH\\r\\n$%d\\r\\n%b\\r\\n$%d\\r\\n%b\\r\\n" % (
    len(channel), channel, len(payload), payload)
with socket.create_connection(("127.0.0.1", port)) as sock:
    sent = 0
    while sent < count:
        batch = min(1000, count - sent)
        sock.sendall(command * batch)
        replies = 0
        buffer = b""
        while replies < batch:
            buffer += sock.recv(65536)
            replies = buffer.count(b"\\r\\n")
        sent += batch
"""
"""A publisher in its own process, so its CPU time is not counted as the reader's."""


def _summary(samples: list[float], unit: str, *, higher_is_better: bool) -> dict[str, Any]:
    best = max(samples) if higher_is_better else min(samples)
    return {
        f"{unit}_median": round(statistics.median(samples), 2),
        f"{unit}_best": round(best, 2),
    }


class _Rates:
    """Publishes per second and CPU µs per publish, one sample per round."""

    def __init__(self) -> None:
        self.rates: list[float] = []
        self.cpu: list[float] = []

    async def measure(self, publishes: int, run: Any) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        await run()
        self.rates.append(publishes / (time.perf_counter() - wall))
        self.cpu.append((time.process_time() - cpu) / publishes * 1e6)

    def summary(self) -> dict[str, Any]:
        return {
            **_summary(self.rates, "per_s", higher_is_better=True),
            **_summary(self.cpu, "cpu_us", higher_is_better=False),
        }


async def publish_rates(url: str, count: int, repeat: int) -> dict[str, Any]:
    """Publishes per second: sequential, 100 concurrent tasks, one call to 1,000 keys."""
    propagator = RedisPropagator(url, prefix="bench")
    await propagator.start(lambda key, payload: None)
    keys = [f"u:{index}" for index in range(1000)]
    per_task = max(1, count * 4 // 100)
    calls = max(1, count // 100)

    async def sequential() -> None:
        for _ in range(count):
            await propagator.publish(["u:1"], PAYLOAD)

    async def task() -> None:
        for _ in range(per_task):
            await propagator.publish(["u:1"], PAYLOAD)

    async def concurrent() -> None:
        await asyncio.gather(*(task() for _ in range(100)))

    async def many_keys() -> None:
        for _ in range(calls):
            await propagator.publish(keys, PAYLOAD)

    figures = {
        "sequential": _Rates(),
        "concurrent_100_tasks": _Rates(),
        "one_call_1000_keys": _Rates(),
    }
    try:
        for _ in range(repeat):
            await figures["sequential"].measure(count, sequential)
            await figures["concurrent_100_tasks"].measure(per_task * 100, concurrent)
            await figures["one_call_1000_keys"].measure(calls * len(keys), many_keys)
    finally:
        await propagator.aclose()
    return {name: rates.summary() for name, rates in figures.items()}


async def reader_cost(server: RedisServer, count: int, repeat: int) -> dict[str, Any]:
    """µs of this process's CPU time per message received and delivered."""
    received = 0
    target = 0
    done = asyncio.Event()

    def deliver(key: str, payload: bytes) -> None:
        nonlocal received
        received += 1
        if received == target:
            done.set()

    propagator = RedisPropagator(server.url, prefix="bench")
    await propagator.start(deliver)
    samples = []
    try:
        await propagator.subscribe(["u:reader"])
        for _ in range(repeat):
            received, target = 0, count
            done.clear()
            start = time.process_time()
            flood = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _FLOOD,
                str(server.port),
                "bench:u:reader",
                str(count),
                stdin=subprocess.PIPE,
            )
            await flood.communicate(PAYLOAD)
            await asyncio.wait_for(done.wait(), 60)
            samples.append((time.process_time() - start) / count * 1e6)
    finally:
        await propagator.aclose()
    return _summary(samples, "us_per_message", higher_is_better=False)


async def main_async(count: int, repeat: int) -> dict[str, Any]:
    """Every figure, against one redis-server of our own."""
    server = RedisServer()
    server.start()
    try:
        return {
            "publish": await publish_rates(server.url, count, repeat),
            "reader": await reader_cost(server, count * 10, repeat),
        }
    finally:
        server.stop()


def main() -> None:
    """Parse arguments, run, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10_000, help="publishes per round")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per figure")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    result = uvloop.run(main_async(args.count, args.repeat))
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for name, figures in result["publish"].items():
        print(
            f"publish, {name.replace('_', ' '):<20}: {figures['per_s_median']:>9,.0f}/s median,"
            f" {figures['per_s_best']:>9,.0f}/s best; CPU {figures['cpu_us_median']:.2f} µs"
            f" median, {figures['cpu_us_best']:.2f} best per publish"
        )
    reader = result["reader"]
    print(
        f"reader: {reader['us_per_message_median']:.2f} µs CPU per message median,"
        f" {reader['us_per_message_best']:.2f} best"
    )


if __name__ == "__main__":
    main()
