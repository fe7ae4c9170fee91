"""What history costs Redis in memory: ``python -m bench.redis_history_memory``.

Publishes a typical notification (an ``order.shipped`` envelope of about 200 bytes, encoded as
the hub encodes it) through ``RedisPropagator`` with history on, against a ``redis-server`` of
its own, and reports:

* **one stream** — ``MEMORY USAGE`` (exact: ``SAMPLES 0``) of one stream holding
  ``--size`` entries, per entry, and of its meta hash;
* **many streams** — ``used_memory`` grown by ``--streams`` streams of ``--size`` entries each
  (stream, meta hash and key overhead included), per entry and per stream.

Redis stores a stream's entries in listpacks of up to 100 entries (``stream-node-max-entries``),
each entry as its id's delta and its payload, so the figure per entry is the payload plus a
small fixed overhead; trimming frees a listpack only once all its entries are gone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import redis

from notifykit.envelope import Envelope, IdGenerator, pack
from notifykit.model import ToUsers
from notifykit.redis import RedisPropagator
from notifykit.redis._channels import ChannelNames

from .redisproc import RedisServer

DATA = {
    "order": 12345,
    "status": "shipped",
    "carrier": "DHL",
    "tracking": "JD014600003828442",
    "eta": "2026-12-03",
}


def typical_payload() -> bytes:
    """An ``order.shipped`` notification to one user, as a propagator carries it."""
    envelope = Envelope(IdGenerator()(), "order.shipped", DATA, ToUsers(("user-12345",)))
    return pack(envelope)


async def measure(size: int, streams: int) -> dict[str, Any]:
    """Every figure, against one redis-server of our own."""
    server = RedisServer()
    server.start()
    client = redis.Redis(port=server.port, protocol=2)
    propagator = RedisPropagator(server.url, prefix="bench", history_size=size)
    await propagator.start(lambda key, payload: None)
    names = ChannelNames("bench")
    payload = typical_payload()
    try:
        for _ in range(size):
            await propagator.publish(["u:one"], payload)
        stream = int(client.memory_usage(names.stream("u:one"), samples=0) or 0)
        meta = int(client.memory_usage(names.meta("u:one"), samples=0) or 0)
        client.flushall()
        before = int(client.info("memory")["used_memory"])
        keys = [f"u:{index}" for index in range(streams)]
        for _ in range(size):
            await propagator.publish(keys, payload)
        grown = int(client.info("memory")["used_memory"]) - before
        entries = size * streams
        return {
            "payload_bytes": len(payload),
            "size": size,
            "one_stream": {
                "stream_bytes": stream,
                "bytes_per_entry": round(stream / size, 1),
                "meta_bytes": meta,
            },
            "many_streams": {
                "streams": streams,
                "entries": entries,
                "used_memory_grown": grown,
                "bytes_per_entry": round(grown / entries, 1),
                "bytes_per_stream": round(grown / streams),
            },
        }
    finally:
        await propagator.aclose()
        client.close()
        server.stop()


def main() -> None:
    """Parse arguments, run, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=100, help="entries kept per stream")
    parser.add_argument("--streams", type=int, default=1000, help="streams, for the total")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    result = asyncio.run(measure(args.size, args.streams))
    if args.json:
        print(json.dumps(result, indent=1))
        return
    one, many = result["one_stream"], result["many_streams"]
    print(f"payload: {result['payload_bytes']} bytes (stored as is; the stamp is not stored)")
    print(
        f"one stream of {result['size']} entries: {one['stream_bytes']:,} bytes,"
        f" {one['bytes_per_entry']} per entry; meta hash {one['meta_bytes']} bytes"
    )
    print(
        f"{many['streams']:,} streams x {result['size']} entries: used_memory grew"
        f" {many['used_memory_grown']:,} bytes: {many['bytes_per_entry']} per entry,"
        f" {many['bytes_per_stream']:,} per stream"
    )


if __name__ == "__main__":
    main()
