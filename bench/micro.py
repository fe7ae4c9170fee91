"""Micro-benchmark of notifykit's in-process hot path: ``python -m bench.micro``.

* ``Hub._deliver`` — what the propagator's reader calls for every payload it receives: unpack
  once, then offer the frame to each connection under the key. Reported as a fixed cost per
  payload plus a cost per connection (from fan-outs of 1 to 1,000 connections).
* the same through each connection's real send path (``Connection.start_sending``) with a
  transport whose ``send`` returns at once — everything per connection short of the ASGI
  server;
* ``Hub.publish`` on a ``MemoryPropagator`` — what an application's ``notify_user`` costs
  in-process: envelope, id, JSON frame encoded once, payload packed, delivered to the
  subscribed connections (0 or 1 here).

It runs on uvloop, like the servers. Numbers are medians of ``--repeat`` timed batches; compare
runs on the same machine, before and after a change to the hot path. ``--json`` prints JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from typing import Any

import anyio

from notifykit import Hub, Principal
from notifykit.connection import Connection
from notifykit.envelope import Envelope, IdGenerator, pack
from notifykit.model import ToUsers

DATA = {"order": 12345, "status": "shipped", "items": [1, 2, 3]}


def _drain(connections: list[Connection]) -> None:
    for connection in connections:
        connection.release()  # drop what queued (these connections have no transport)


def _timed(batches: int, fn: Any, after: Any = None) -> list[float]:
    """Run ``fn`` ``batches`` times; ``after`` (untimed) between runs. Returns seconds."""
    samples = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(batches):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
            if after is not None:
                after()
    finally:
        gc.enable()
    return samples


async def deliver_fanout(sizes: list[int], repeat: int) -> dict[str, Any]:
    """ns per ``_deliver`` call for each fan-out size, and the fitted per-connection cost.

    Every call passes the same payload object, so the hub's one-entry unpack cache hits (as for
    an in-process publish to several keys); a payload from Redis is a new object each time and
    pays one ``unpack`` (~0.2 µs) more per payload.
    """
    payload = pack(Envelope(IdGenerator()(), "order.shipped", DATA, ToUsers(("u1",))))
    results: dict[str, Any] = {}
    async with Hub() as hub:
        for size in sizes:
            per_batch = max(1, 2000 // size)  # payloads per timed batch (bounded queue use)
            connections = [
                Connection(Principal("u1"), queue_size=per_batch + 1) for _ in range(size)
            ]
            for connection in connections:
                await hub.attach(connection)
            deliver = hub.router.deliver

            def run(deliver: Any = deliver, per_batch: int = per_batch) -> None:
                for _ in range(per_batch):
                    deliver("u:u1", payload)

            samples = _timed(repeat, run, lambda connections=connections: _drain(connections))
            per_call = [s / per_batch * 1e9 for s in samples]
            results[str(size)] = {
                "ns_per_deliver_median": round(statistics.median(per_call), 1),
                "ns_per_deliver_best": round(min(per_call), 1),
                "ns_per_connection_median": round(statistics.median(per_call) / size, 1),
            }
            for connection in connections:
                await hub.detach(connection)
    # Per-connection cost: slope between the smallest and largest fan-out.
    small, large = str(sizes[0]), str(sizes[-1])
    slope = (results[large]["ns_per_deliver_median"] - results[small]["ns_per_deliver_median"]) / (
        sizes[-1] - sizes[0]
    )
    fixed = results[small]["ns_per_deliver_median"] - slope * sizes[0]
    return {
        "by_fanout": results,
        "ns_per_connection": round(slope, 1),
        "ns_fixed_per_payload": round(fixed, 1),
    }


class _NullTransport:
    """A transport that takes every frame at once; counts frames and signals a target."""

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink

    def send_now(self, text: str) -> bool:
        sink = self.sink
        sink.sent += 1
        if sink.sent >= sink.target:
            sink.done.set()
        return True

    async def send(self, text: str) -> None:
        self.send_now(text)


class _Sink:
    def __init__(self) -> None:
        self.sent = 0
        self.target = 0
        self.done = anyio.Event()


async def deliver_to_writers(sizes: list[int], repeat: int) -> dict[str, Any]:
    """ns per delivery (payload x connection) through the connections' real send path.

    Each connection sends (as the gateway sets it up) to a transport whose ``send`` returns at
    once, so this is ``_deliver`` + the connection's send path — everything per connection
    short of the ASGI server.
    """
    payload = pack(Envelope(IdGenerator()(), "order.shipped", DATA, ToUsers(("u1",))))
    results: dict[str, Any] = {}
    async with Hub() as hub:
        for size in sizes:
            per_batch = max(1, 5000 // size)
            sink = _Sink()
            connections = [
                Connection(Principal("u1"), queue_size=per_batch + 1) for _ in range(size)
            ]
            samples = []
            async with anyio.create_task_group() as tasks:
                for connection in connections:
                    await hub.attach(connection)
                    connection.start_sending(_NullTransport(sink), tasks)  # type: ignore[arg-type]
                await anyio.sleep(0.01)
                gc.collect()
                for _ in range(repeat):
                    # A burst: per_batch payloads queued before the writers run.
                    sink.sent = 0
                    sink.target = per_batch * size
                    sink.done = anyio.Event()
                    start = time.perf_counter()
                    for _ in range(per_batch):
                        hub.router.deliver("u:u1", payload)
                    await sink.done.wait()
                    samples.append((time.perf_counter() - start) / (per_batch * size) * 1e9)
                singles = []
                for _ in range(repeat):
                    # One payload at a time: every writer is parked when its frame arrives.
                    start = time.perf_counter()
                    for _ in range(per_batch):
                        sink.sent = 0
                        sink.target = size
                        sink.done = anyio.Event()
                        hub.router.deliver("u:u1", payload)
                        await sink.done.wait()
                    singles.append((time.perf_counter() - start) / (per_batch * size) * 1e9)
                tasks.cancel_scope.cancel()
            for connection in connections:
                await hub.detach(connection)
            results[str(size)] = {
                "burst_ns_per_delivery_median": round(statistics.median(samples), 1),
                "one_at_a_time_ns_per_delivery_median": round(statistics.median(singles), 1),
            }
    return results


async def publish_memory(count: int, repeat: int) -> dict[str, Any]:
    """µs per ``Hub.publish`` (notify_user) on a MemoryPropagator, with 0 and 1 receivers."""
    results: dict[str, Any] = {}
    async with Hub() as hub:
        connection = Connection(Principal("here"), queue_size=count + 1)
        await hub.attach(connection)
        for label, user in (("no_receiver", "elsewhere"), ("one_receiver", "here")):
            samples = []
            for _ in range(repeat):
                gc.collect()
                start = time.perf_counter()
                for _ in range(count):
                    await hub.notify_user(user, "order.shipped", DATA)
                samples.append((time.perf_counter() - start) / count * 1e6)
                _drain([connection])
            results[label] = {
                "us_per_publish_median": round(statistics.median(samples), 3),
                "us_per_publish_best": round(min(samples), 3),
            }
        await hub.detach(connection)
    return results


def encode_once(count: int, repeat: int) -> dict[str, Any]:
    """µs to build an envelope and pack it (JSON encode once) — the publisher's share."""
    ids = IdGenerator()
    target = ToUsers(("u1",))

    def run() -> None:
        for _ in range(count):
            pack(Envelope(ids(), "order.shipped", DATA, target))

    samples = [s / count * 1e6 for s in _timed(repeat, run)]
    return {"us_per_pack_median": round(statistics.median(samples), 3)}


async def main_async(repeat: int) -> dict[str, Any]:
    """Every micro-benchmark."""
    return {
        "deliver": await deliver_fanout([1, 10, 100, 1000], repeat),
        "deliver_to_writers": await deliver_to_writers([1, 10, 100, 1000], repeat),
        "publish_memory": await publish_memory(5000, repeat),
        "envelope_pack": encode_once(20000, repeat),
    }


def main() -> None:
    """Parse arguments, run, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15, help="timed batches per figure")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    result = anyio.run(
        main_async, args.repeat, backend="asyncio", backend_options={"use_uvloop": True}
    )
    if args.json:
        print(json.dumps(result, indent=1))
        return
    d = result["deliver"]
    print("Hub._deliver (per payload received from the propagator):")
    for size, r in d["by_fanout"].items():
        print(
            f"  fan-out {int(size):>5}: {r['ns_per_deliver_median']:>10,.0f} ns per payload"
            f"  ({r['ns_per_connection_median']:,.0f} ns per connection)"
        )
    print(
        f"  fit: {d['ns_fixed_per_payload']:,.0f} ns per payload"
        f" + {d['ns_per_connection']:,.0f} ns per connection"
    )
    print("Hub._deliver + connection send path (no-op transport), ns per delivery:")
    for size, r in result["deliver_to_writers"].items():
        print(
            f"  fan-out {int(size):>5}: {r['one_at_a_time_ns_per_delivery_median']:>8,.0f}"
            f" one payload at a time, {r['burst_ns_per_delivery_median']:>8,.0f} in bursts"
        )
    print("Hub.publish / notify_user on MemoryPropagator:")
    for label, r in result["publish_memory"].items():
        print(f"  {label:>13}: {r['us_per_publish_median']:.2f} µs per notification")
    print(f"Envelope + pack (encode once): {result['envelope_pack']['us_per_pack_median']:.2f} µs")


if __name__ == "__main__":
    main()
