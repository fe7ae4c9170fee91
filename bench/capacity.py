"""Capacity: a full server process of idle authenticated connections, and a broadcast to all.

    python -m bench.capacity [--quick] [--connections N] [--variants floor-jwt,notifykit]

For each variant in turn, one server process gets as many idle authenticated connections as
its file-descriptor limit allows (default: the hard limit minus 1,000 for Redis, the listener
and the rest; ~19,000 with this box's 20,000), held by several load-generator processes
(each has its own descriptor limit and connects from its own 127.0.0.x address, so ephemeral
ports do not run out). It reports the connect rate, RSS in total and per connection, then
publishes broadcasts one at a time, taking turns between the variants (every server stays up
until the end), and reports the time from the publish call to the last delivery (median over
``--broadcasts``), with lost deliveries counted. Every phase is bounded in time: a connect
times out after 60 s, a broadcast round after 120 s.
``bench.run --capacity`` runs it as part of the main run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import median, rss_kib
from .deploy import VARIANTS, Conn, Deployment, Round, Variant, parse_variants
from .redisproc import RedisServer
from .storm import one_instance, storm_tokens

HERE = Path(__file__).resolve().parent

DEFAULT_VARIANTS = ("floor-jwt", "notifykit", "notifykit-websockets")


def default_connections() -> int:
    """The hard open-files limit minus a margin of 1,000 (servers inherit it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 20_000
    return max(1_000, hard - 1_000)


async def fill(
    d: Deployment,
    tokens: dict[str, str],
    log: Callable[[str], None],
    concurrency: int = 64,
    within: float = 60.0,
) -> dict[str, Any]:
    """Connect one connection per token to ``d``'s one instance; RSS and connect rate."""
    name = d.variant.name
    users = list(tokens)
    warm = [Conn(i, u, 0, tokens[u]) for i, u in enumerate(users[:20])]
    rest = [Conn(i, u, 0, tokens[u]) for i, u in enumerate(users[20:], start=20)]
    await d.connect(warm, within=within)
    await asyncio.sleep(1.0)
    pid = d.servers[0].pid
    before = rss_kib(pid)
    info = await d.connect(rest, concurrency=concurrency, within=within)
    log(
        f"  capacity {name}: {info['ready'] + len(warm):,} connections, "
        f"{info['connects_per_s']:,.0f}/s, {info['failures']} failed"
    )
    if info["failures"]:
        log(f"  capacity {name}: first failures {info['first_failures']}")
    await asyncio.sleep(2.0)
    after = rss_kib(pid)
    return {
        "connections": len(users),
        "ready": info["ready"] + len(warm),
        "failures": info["failures"],
        "first_failures": info["first_failures"],
        "connect_seconds": round(info["span_seconds"], 3),
        "connects_per_s": info["connects_per_s"],
        "rss_kib": after,
        "rss_before_kib": before,
        "kib_per_connection": round((after - before) / max(1, info["ready"]), 3),
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
    """Fill one instance of each variant in turn (all stay up: a server of 19,000 idle
    connections costs little CPU), then ``broadcasts`` single broadcasts per variant, taking
    turns between the variants so that background load hits them alike; medians."""
    tokens = storm_tokens(connections, prefix="cap")
    result: dict[str, Any] = {}
    rounds: dict[str, list[Round]] = {v.name: [] for v in variants}
    async with contextlib.AsyncExitStack() as stack:
        deployments: dict[str, Deployment] = {}
        for variant in variants:
            log(f"capacity: {variant.name}, {connections:,} connections on one process")
            prefix = f"capacity-{variant.name}"
            d = one_instance(redis, variant, clients, logs, prefix, publisher=True)
            deployments[variant.name] = await stack.enter_async_context(d)
            result[variant.name] = await fill(d, tokens, log)
        log(f"capacity: {broadcasts} broadcast(s) to everyone per variant, interleaved")
        for _ in range(broadcasts):
            for name, d in deployments.items():
                await asyncio.sleep(0.5)
                r = await d.round("capacity", "broadcast", {"n": 1, "concurrency": 1}, 1)
                rounds[name].append(r)
                log(
                    f"  capacity {name}: broadcast to {r.delivered:,} in "
                    f"{r.seconds * 1e3:.0f} ms ({r.lost} lost)"
                )
    for name, done in rounds.items():
        result[name].update(
            {
                "broadcast_ms_to_last_delivery": median([r.seconds * 1e3 for r in done]),
                "broadcast_cpu_us_per_delivery": median([r.cpu_us_per_delivery for r in done]),
                "broadcast_lost": sum(r.lost for r in done),
                "broadcasts": [r.summary() for r in done],
            }
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
    parser.add_argument("--broadcasts", type=int, help="broadcasts per variant (default 5)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--out", type=Path, help="JSON (default bench/results/capacity-<time>)")
    args = parser.parse_args()
    names = parse_variants(parser, args.variants)
    connections = args.connections or (5_000 if args.quick else default_connections())
    broadcasts = args.broadcasts or (1 if args.quick else 5)
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
