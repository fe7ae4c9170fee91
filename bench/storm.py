"""Connect cost under a reconnect storm: N clients connecting at once to one fresh instance.

After a deploy (or a crash) every client of an instance reconnects at the same moment, to an
instance that has nothing yet: no routing entries, no subscriptions, no presence. Each round
starts one fresh server of the variant and has ``clients`` load-generator processes open N
connections (distinct users, each with its own JWT) with no concurrency limit, all at once, and
measures:

* the time from the first connection attempt until the last client is welcomed;
* the server's CPU per connect over the storm;
* Redis commands per connect (``INFO commandstats``, the server's own commands only: nothing
  else uses this Redis meanwhile).

Rounds take turns between the variants; figures are medians of the rounds. Used by
:mod:`bench.run` (``--no-storm`` skips it); the server's listen backlog is 4,096 for every
variant (the kernel's ``somaxconn`` here).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from notifykit import mint_token

from .common import SECRET, cpu_ns, median
from .deploy import Conn, Deployment, Variant
from .redisproc import RedisServer, command_delta

SOURCES = [f"127.0.0.{2 + i}" for i in range(16)]
"""Local addresses the client processes connect from, one each (their own ephemeral ports)."""


def storm_tokens(n: int, prefix: str = "storm") -> dict[str, str]:
    """``n`` distinct users and a token for each."""
    return {
        f"{prefix}{i}": mint_token(f"{prefix}{i}", secret=SECRET, ttl=6 * 3600) for i in range(n)
    }


def one_instance(
    redis: RedisServer,
    variant: Variant,
    clients: int,
    logs: Path,
    prefix: str,
    publisher: bool = False,
) -> Deployment:
    """One instance of ``variant`` and ``clients`` load generators, each connecting from its
    own address (:data:`SOURCES`)."""
    return Deployment(
        variant,
        redis.url,
        redis.pid,
        1,
        logs,
        clients=clients,
        publisher=publisher,
        prefix=prefix,
        client_sources=SOURCES[:clients],
    )


async def storm_round(
    redis: RedisServer,
    variant: Variant,
    tokens: dict[str, str],
    clients: int,
    logs: Path,
    prefix: str,
    within: float = 120.0,
) -> dict[str, Any]:
    """One storm on a fresh instance of ``variant``."""
    conns = [Conn(i, user, 0, token) for i, (user, token) in enumerate(tokens.items())]
    async with one_instance(redis, variant, clients, logs, prefix) as d:
        await asyncio.sleep(0.5)  # let the server settle after start-up
        pid = d.servers[0].pid
        cpu0 = cpu_ns(pid)
        commands0 = redis.command_stats()
        info = await d.connect(conns, concurrency=0, within=within)
        cpu = cpu_ns(pid) - cpu0
        by_name = command_delta(commands0, redis.command_stats())
    return {
        "connections": len(conns),
        "seconds_to_all_welcomed": round(info["span_seconds"], 3),
        **connect_figures(info, cpu, by_name),
    }


def connect_figures(info: dict[str, Any], cpu: int, commands: dict[str, int]) -> dict[str, Any]:
    """What connecting cost: ``info`` from :meth:`Deployment.connect`, the server's CPU over
    it, and the Redis commands run meanwhile (:func:`~bench.redisproc.command_delta`)."""
    ready = max(1, info["ready"])
    return {
        "ready": info["ready"],
        "failures": info["failures"],
        "first_failures": info["first_failures"],
        "connects_per_s": info["connects_per_s"],
        "cpu_us_per_connect": round(cpu / ready / 1e3, 1),
        "redis_commands_per_connect": round(sum(commands.values()) / ready, 3),
        "redis_commands_per_connect_by_name": {
            name: round(count / ready, 3) for name, count in commands.items()
        },
    }


async def storm(
    redis: RedisServer,
    variants: list[Variant],
    n: int,
    rounds: int,
    clients: int,
    logs: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """``rounds`` storms of ``n`` connections per variant, taking turns; medians."""
    tokens = storm_tokens(n)
    runs: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    for index in range(rounds):
        for variant in variants:
            started = time.monotonic()
            run = await storm_round(
                redis, variant, tokens, clients, logs, f"storm-{variant.name}-{index}"
            )
            runs[variant.name].append(run)
            log(
                f"  storm {variant.name}: {run['ready']} of {n} welcomed in "
                f"{run['seconds_to_all_welcomed']:.2f} s, {run['cpu_us_per_connect']:.0f} µs "
                f"CPU and {run['redis_commands_per_connect']:.2f} Redis commands per connect "
                f"({time.monotonic() - started:.0f} s with start and stop)"
            )
            if run["failures"]:
                log(f"  storm {variant.name}: {run['failures']} failed: {run['first_failures']}")
    return {
        name: {
            "connections": n,
            "seconds_to_all_welcomed": median([r["seconds_to_all_welcomed"] for r in done]),
            "connects_per_s": median([r["connects_per_s"] for r in done]),
            "cpu_us_per_connect": median([r["cpu_us_per_connect"] for r in done]),
            "redis_commands_per_connect": median([r["redis_commands_per_connect"] for r in done]),
            "failures": sum(r["failures"] for r in done),
            "rounds": done,
        }
        for name, done in runs.items()
    }
