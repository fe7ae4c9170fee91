"""Capacity: a full server process of idle authenticated connections, and a broadcast to all.

    python -m bench.capacity [--quick] [--connections N] [--variants floor-jwt,notifykit]

For each variant in turn, one server process gets as many idle authenticated connections as
its file-descriptor limit allows (default: the hard limit minus 1,000 for Redis, the listener
and the rest; ~19,000 with this box's 20,000), held by several load-generator processes
(each has its own descriptor limit and connects from its own 127.0.0.x address, so ephemeral
ports do not run out). It reports the connect rate, RSS in total and per connection, then
publishes broadcasts one at a time and reports the time from the publish call to the last
delivery (median over ``--broadcasts``), with lost deliveries counted. Every phase is bounded
in time: connects time out after ``--within`` seconds each, a broadcast round after 120 s.
``bench.run --capacity`` runs it as part of the main run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import median, rss_kib
from .deploy import VARIANTS, Conn, Variant, parse_variants
from .redisproc import RedisServer
from .storm import one_instance, storm_tokens

HERE = Path(__file__).resolve().parent

DEFAULT_VARIANTS = ("floor-jwt", "notifykit")


def default_connections() -> int:
    """The hard open-files limit minus a margin of 1,000 (servers inherit it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 20_000
    return max(1_000, hard - 1_000)


async def capacity_one(
    redis: RedisServer,
    variant: Variant,
    tokens: dict[str, str],
    clients: int,
    broadcasts: int,
    logs: Path,
    log: Callable[[str], None],
    concurrency: int = 64,
    within: float = 60.0,
) -> dict[str, Any]:
    """Fill one instance of ``variant`` with ``len(tokens)`` connections; broadcast to them."""
    users = list(tokens)
    warm = [Conn(i, u, 0, tokens[u]) for i, u in enumerate(users[:20])]
    rest = [Conn(i, u, 0, tokens[u]) for i, u in enumerate(users[20:], start=20)]
    prefix = f"capacity-{variant.name}"
    async with one_instance(redis, variant, clients, logs, prefix, publisher=True) as d:
        await d.connect(warm, within=within)
        await asyncio.sleep(1.0)
        pid = d.servers[0].pid
        before = rss_kib(pid)
        info = await d.connect(rest, concurrency=concurrency, within=within)
        log(
            f"  capacity {variant.name}: {info['ready'] + len(warm)} connections, "
            f"{info['ready'] / max(info['span_seconds'], 1e-9):,.0f}/s, "
            f"{info['failures']} failed"
        )
        if info["failures"]:
            log(f"  capacity {variant.name}: first failures {info['first_failures']}")
        await asyncio.sleep(2.0)
        after = rss_kib(pid)
        rounds = []
        for _ in range(broadcasts):
            await asyncio.sleep(0.5)
            r = await d.round("capacity", "broadcast", {"n": 1, "concurrency": 1}, 1)
            rounds.append(r)
            log(
                f"  capacity {variant.name}: broadcast to {r.delivered:,} in "
                f"{r.seconds * 1e3:.0f} ms ({r.lost} lost)"
            )
    ready = max(1, info["ready"])
    return {
        "connections": len(users),
        "ready": info["ready"] + len(warm),
        "failures": info["failures"],
        "first_failures": info["first_failures"],
        "connect_seconds": round(info["span_seconds"], 3),
        "connects_per_s": info["connects_per_s"],
        "rss_kib": after,
        "rss_before_kib": before,
        "kib_per_connection": round((after - before) / ready, 3),
        "broadcast_ms_to_last_delivery": median([r.seconds * 1e3 for r in rounds]),
        "broadcast_cpu_us_per_delivery": median([r.cpu_us_per_delivery for r in rounds]),
        "broadcast_lost": sum(r.lost for r in rounds),
        "broadcasts": [r.summary() for r in rounds],
    }


async def capacity(
    redis: RedisServer,
    variants: list[Variant],
    connections: int,
    clients: int,
    broadcasts: int,
    logs: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """:func:`capacity_one` for each variant, one after the other."""
    tokens = storm_tokens(connections, prefix="cap")
    result: dict[str, Any] = {}
    for variant in variants:
        log(f"capacity: {variant.name}, {connections:,} connections on one process")
        result[variant.name] = await capacity_one(
            redis, variant, tokens, clients, broadcasts, logs, log
        )
    base = result.get("floor-jwt")
    if base:
        for data in result.values():
            data["broadcast_time_ratio_to_floor_jwt"] = round(
                data["broadcast_ms_to_last_delivery"] / base["broadcast_ms_to_last_delivery"], 3
            )
            data["rss_ratio_to_floor_jwt"] = round(
                data["kib_per_connection"] / base["kib_per_connection"], 3
            )
    return result


def log_stderr(message: str) -> None:
    """Progress on stderr."""
    import sys

    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5,000 connections, 1 broadcast")
    parser.add_argument("--connections", type=int, help="default: the fd hard limit - 1,000")
    parser.add_argument("--clients", type=int, default=4, help="load-generator processes")
    parser.add_argument("--broadcasts", type=int, help="broadcasts measured (default 3)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--out", type=Path, help="JSON (default bench/results/capacity-<time>)")
    args = parser.parse_args()
    names = parse_variants(parser, args.variants)
    connections = args.connections or (5_000 if args.quick else default_connections())
    broadcasts = args.broadcasts or (1 if args.quick else 3)
    out = args.out or HERE / "results" / f"capacity-{time.strftime('%Y%m%d-%H%M%S')}.json"
    logs = out.parent / "logs" / out.stem
    logs.mkdir(parents=True, exist_ok=True)

    async def run() -> dict[str, Any]:
        with RedisServer() as redis:
            return await capacity(
                redis,
                [VARIANTS[n] for n in names],
                connections,
                args.clients,
                broadcasts,
                logs,
                log_stderr,
            )

    result = asyncio.run(run())
    out.write_text(json.dumps(result, indent=1) + "\n")
    from .report import capacity_table

    print(capacity_table(result))
    log_stderr(f"wrote {out}")


if __name__ == "__main__":
    main()
