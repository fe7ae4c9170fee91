"""Run the benchmark: ``python -m bench.run [--quick] [--capacity] [--out FILE] [--chart PNG]``.

For each variant (see :data:`bench.deploy.VARIANTS`) it starts K instances sharing a Redis it
owns (every variant its own channel prefix), connects M websocket clients spread over them,
and measures, in rounds that take turns between the variants (so background load on the
machine hits them alike; each figure is the median of the rounds):

* targeted notifications (publisher → one user each, round-robin; users have 1 or 2
  connections): deliveries per second and server CPU per delivery;
* broadcasts: deliveries per second and server CPU per delivery;
* publish → receive latency at a fixed offered rate (p50/p95/p99);
* bystanders: notifications only for users held by instance 0 — what the other instances
  and Redis pay for them (nothing, with per-user channels);
* lost messages (every expected delivery is counted per connection; must be 0);
* connects and idle memory: N connections to a fresh instance — server CPU and Redis commands
  per connect, connect rate, RSS per idle authenticated connection;

then the scaling curve (K = 1, 2, 4) for the plan's scaling variants, the reconnect storm
(:mod:`bench.storm`) and, with ``--capacity``, a full process of connections
(:mod:`bench.capacity`). Every figure is also given as a ratio to the floor of the same run
(:mod:`bench.servers.floor`). It prints tables (``python -m bench.report FILE`` prints them
again as Markdown), writes JSON and draws the chart (:mod:`bench.chart`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from notifykit import mint_token

from .capacity import DEFAULT_VARIANTS as DEFAULT_CAPACITY_VARIANTS
from .capacity import capacity, default_connections
from .common import SECRET, cpu_ns, median
from .deploy import VARIANTS, Conn, Deployment, Round, Variant, parse_variants, spread
from .redisproc import RedisServer, command_delta
from .report import render
from .storm import connect_figures, storm

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Plan:
    """Sizes and counts of one run (all bounded: the full plan takes ~5-10 minutes)."""

    users: int
    instances: int
    rounds: int
    targeted_n: int
    broadcast_n: int
    latency_rate: float
    latency_n: int
    latency_rounds: int
    idle_connections: int
    idle_rounds: int
    scaling: tuple[int, ...]
    scaling_rounds: int
    scaling_variants: tuple[str, ...]
    clients: int
    concurrency: int
    storm_n: int
    storm_rounds: int
    storm_clients: int
    storm_variants: tuple[str, ...]
    capacity_connections: int
    capacity_clients: int
    capacity_broadcasts: int
    capacity_variants: tuple[str, ...]


FULL = Plan(
    users=300,
    instances=2,
    rounds=3,
    targeted_n=45000,
    broadcast_n=200,
    latency_rate=500,
    latency_n=2000,
    latency_rounds=3,
    idle_connections=2000,
    idle_rounds=3,
    scaling=(1, 2, 4),
    scaling_rounds=3,
    scaling_variants=("raw", "notifykit", "single-channel"),
    clients=2,
    concurrency=64,
    storm_n=10000,
    storm_rounds=3,
    storm_clients=2,
    storm_variants=("floor-jwt", "notifykit", "notifykit-websockets"),
    capacity_connections=default_connections(),
    capacity_clients=4,
    capacity_broadcasts=5,
    capacity_variants=DEFAULT_CAPACITY_VARIANTS,
)

QUICK = Plan(
    users=200,
    instances=2,
    rounds=1,
    targeted_n=20000,
    broadcast_n=100,
    latency_rate=500,
    latency_n=1000,
    latency_rounds=1,
    idle_connections=2000,
    idle_rounds=1,
    scaling=(1, 2, 4),
    scaling_rounds=1,
    scaling_variants=("raw", "notifykit", "single-channel"),
    clients=2,
    concurrency=64,
    storm_n=2000,
    storm_rounds=1,
    storm_clients=2,
    storm_variants=("floor-jwt", "notifykit", "notifykit-websockets"),
    capacity_connections=5000,
    capacity_clients=4,
    capacity_broadcasts=1,
    capacity_variants=DEFAULT_CAPACITY_VARIANTS,
)


def log(message: str) -> None:
    """Progress on stderr (the tables go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def summarize(rounds: list[Round]) -> dict[str, Any]:
    """Medians over rounds, and the lost/extra totals."""
    summaries = [r.summary() for r in rounds]
    result: dict[str, Any] = {
        "rounds": summaries,
        "deliveries_per_s": median([r.deliveries_per_s for r in rounds]),
        "server_cpu_us_per_delivery": median([r.cpu_us_per_delivery for r in rounds]),
        "server_cpu_us_per_notification": median([r.cpu_us_per_notification for r in rounds]),
        "lost": sum(r.lost for r in rounds),
        "extra": sum(r.extra for r in rounds),
        "expected": sum(r.expected for r in rounds),
        "closed_connections": max(r.closed_connections for r in rounds),
    }
    if rounds and rounds[0].latency_ms:
        for name in ("p50", "p95", "p99", "max"):
            result[f"latency_{name}_ms"] = median([r.latency_ms[name] for r in rounds])
    instances = len(rounds[0].server_cpu_ns) if rounds else 0
    result["server_cpu_us_per_notification_per_instance"] = [
        median([r.server_cpu_ns[i] / max(1, r.notifications) / 1e3 for r in rounds])
        for i in range(instances)
    ]
    return result


def bystanders(rounds: list[Round]) -> dict[str, Any]:
    """CPU per notification of the instance holding the targeted users (instance 0) and,
    averaged, of the instances holding none of them, plus Redis's; medians over rounds."""
    return {
        "notifications": rounds[0].notifications if rounds else 0,
        "lost": sum(r.lost for r in rounds),
        "holder_cpu_us_per_notification": median(
            [r.server_cpu_ns[0] / max(1, r.notifications) / 1e3 for r in rounds]
        ),
        "bystander_cpu_us_per_notification": median(
            [
                sum(r.server_cpu_ns[1:])
                / max(1, len(r.server_cpu_ns) - 1)
                / max(1, r.notifications)
                / 1e3
                for r in rounds
            ]
        ),
        "redis_cpu_us_per_notification": median(
            [r.redis_cpu_ns / max(1, r.notifications) / 1e3 for r in rounds]
        ),
    }


class Bench:
    """One run: a Redis, the tokens, and the results so far."""

    def __init__(self, plan: Plan, redis: RedisServer, logs: Path) -> None:
        self.plan = plan
        self.redis = redis
        self.logs = logs
        users = [f"user{i}" for i in range(plan.users)]
        idle = [f"idle{i}" for i in range(plan.idle_connections + 20)]
        self.tokens = {u: mint_token(u, secret=SECRET, ttl=6 * 3600) for u in [*users, *idle]}
        self.users = users
        self.idle_users = idle

    def deployment(self, variant: Variant, instances: int, publisher: bool = True) -> Deployment:
        """A deployment of ``variant`` on this run's Redis."""
        return Deployment(
            variant,
            self.redis.url,
            self.redis.pid,
            instances,
            self.logs,
            clients=self.plan.clients,
            publisher=publisher,
            prefix=f"bench-{variant.name}",
        )

    async def connect(self, deployment: Deployment, conns: list[Conn]) -> dict[str, Any]:
        """Connect and complain loudly about failures."""
        info = await deployment.connect(conns)
        if info["failures"]:
            log(f"  {info['failures']} connections failed: {info['first_failures']}")
        return info

    async def start(self, variants: list[Variant], instances: int) -> dict[str, Deployment]:
        """Start and connect one deployment per variant (each with its own channel prefix)."""
        deployments: dict[str, Deployment] = {}
        for variant in variants:
            d = self.deployment(variant, instances)
            deployments[variant.name] = d
            try:
                await d.start()
                info = await self.connect(d, spread(self.users, instances, self.tokens))
            except BaseException:
                await asyncio.gather(*(x.stop() for x in deployments.values()))
                raise
            log(f"  {variant.name}: {info['ready']} connections in {info['seconds']:.1f} s")
        await asyncio.sleep(0.5)
        return deployments

    async def interleaved(
        self, deployments: dict[str, Deployment], kind: str, rounds: int
    ) -> dict[str, list[Round]]:
        """``rounds`` rounds of ``kind``, taking turns between the deployments so background
        load on the machine hits every variant alike. Kinds: ``targeted`` (round-robin over
        every user), ``broadcast``, ``latency`` (paced targeted), ``bystander`` (targeted at
        the users held only by instance 0: what do the other instances pay for them?)."""
        plan = self.plan
        result: dict[str, list[Round]] = {name: [] for name in deployments}
        for _ in range(rounds):
            for name, d in deployments.items():
                await asyncio.sleep(0.3)
                if kind == "targeted":
                    n = plan.targeted_n
                    args = {"users": d.users, "n": n, "concurrency": plan.concurrency}
                    r = await d.round(kind, "targeted", args, d.targeted_expectation(n))
                elif kind == "broadcast":
                    n = plan.broadcast_n
                    args = {"n": n, "concurrency": plan.concurrency}
                    r = await d.round(kind, "broadcast", args, n)
                elif kind == "bystander":
                    users = d.users_only_on(0)
                    n = min(plan.targeted_n // 2, 200 * len(users))
                    args = {"users": users, "n": n, "concurrency": plan.concurrency}
                    r = await d.round(kind, "targeted", args, d.targeted_expectation(n, users))
                else:
                    n = plan.latency_n
                    args = {"users": d.users, "n": n, "rate": plan.latency_rate}
                    expected = d.targeted_expectation(n)
                    r = await d.round(kind, "paced", args, expected, latency=True)
                if r.lost or r.extra:
                    log(f"  {name} {kind}: {r.lost} lost, {r.extra} extra of {r.expected}")
                result[name].append(r)
        return result

    async def warm_up(self, deployments: dict[str, Deployment]) -> None:
        """One small unmeasured targeted round per deployment."""
        for d in deployments.values():
            n = len(d.users)
            args = {"users": d.users, "n": n, "concurrency": self.plan.concurrency}
            await d.round("warm-up", "targeted", args, d.targeted_expectation(n))

    async def main(self, variants: list[Variant], idle: bool) -> dict[str, Any]:
        """Every figure of every variant at the plan's K."""
        plan = self.plan
        log(f"starting {len(variants)} deployments of {plan.instances} instances")
        deployments = await self.start(variants, plan.instances)
        out: dict[str, Any] = {
            v.name: {"description": v.description, "connections": len(d.conns)}
            for v, d in zip(variants, deployments.values(), strict=True)
        }
        try:
            await self.warm_up(deployments)
            for kind, rounds in (
                ("targeted", plan.rounds),
                ("broadcast", plan.rounds),
                ("latency", plan.latency_rounds),
                ("bystander", plan.rounds),
            ):
                log(f"{kind}: {rounds} round(s) per variant, interleaved")
                for name, measured in (await self.interleaved(deployments, kind, rounds)).items():
                    if kind == "bystander":
                        out[name]["targeted"]["bystander"] = bystanders(measured)
                    else:
                        out[name][kind] = summarize(measured)
        finally:
            await asyncio.gather(*(d.stop() for d in deployments.values()))
        runs: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
        for index in range(plan.idle_rounds if idle else 0):
            log(
                f"connect + idle, round {index + 1}: {plan.idle_connections} connections on one "
                "fresh instance per variant, interleaved"
            )
            for variant in variants:
                runs[variant.name].append(await self.idle(variant))
        for name, done in runs.items():
            out[name]["idle"] = {
                key: median([r[key] for r in done])
                for key in (
                    "kib_per_connection",
                    "cpu_us_per_connect",
                    "redis_commands_per_connect",
                    "connects_per_s",
                )
            }
            out[name]["idle"]["rounds"] = done
        return out

    async def idle(self, variant: Variant) -> dict[str, Any]:
        """Connect cost and RSS per idle authenticated connection on a fresh instance: 20
        warm-up connections; then N more (distinct users; 64 at a time per client process),
        with the server's CPU and Redis's command count read before and after; RSS 2 s
        later."""
        n = self.plan.idle_connections
        async with self.deployment(variant, 1, publisher=False) as d:
            warm = [Conn(i, u, 0, self.tokens[u]) for i, u in enumerate(self.idle_users[:20])]
            await self.connect(d, warm)
            await asyncio.sleep(1.0)
            before = d.server_rss_kib()[0]
            pid = d.servers[0].pid
            cpu0 = cpu_ns(pid)
            commands0 = self.redis.command_stats()
            idle = [Conn(i, u, 0, self.tokens[u]) for i, u in enumerate(self.idle_users[20:])]
            info = await self.connect(d, idle)
            cpu = cpu_ns(pid) - cpu0
            by_name = command_delta(commands0, self.redis.command_stats())
            await asyncio.sleep(2.0)
            after = d.server_rss_kib()[0]
        ready = max(1, info["ready"])
        return {
            "connections": n,
            "connect_seconds": round(info["span_seconds"], 3),
            **connect_figures(info, cpu, by_name),
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_connection": round((after - before) / ready, 3),
        }

    async def scaling(self, variants: list[Variant], instances: int) -> dict[str, Any]:
        """Targeted throughput and per-instance CPU with ``instances`` instances."""
        deployments = await self.start(variants, instances)
        try:
            await self.warm_up(deployments)
            rounds = self.plan.scaling_rounds
            measured = await self.interleaved(deployments, "targeted", rounds)
            bystander = await self.interleaved(deployments, "bystander", rounds)
        finally:
            await asyncio.gather(*(d.stop() for d in deployments.values()))
        return {
            name: {**summarize(rounds), "bystander": bystanders(bystander[name])}
            for name, rounds in measured.items()
        }


FIGURES: dict[str, tuple[str, str, str]] = {
    "cpu_per_targeted_delivery": ("targeted", "server_cpu_us_per_delivery", "floor"),
    "cpu_per_broadcast_delivery": ("broadcast", "server_cpu_us_per_delivery", "floor"),
    "p99_latency": ("latency", "latency_p99_ms", "floor"),
    "rss_per_idle_connection": ("idle", "kib_per_connection", "floor-jwt"),
    "cpu_per_connect": ("idle", "cpu_us_per_connect", "floor-jwt"),
}
"""Each ratio: (part, figure, the baseline it is divided by). Memory and connect cost are of
authenticated connections, so their baseline is the floor that verifies a JWT."""


def ratios(variants: dict[str, Any], base: str | None = None) -> dict[str, dict[str, float]]:
    """Each variant's figures divided by its baseline's in :data:`FIGURES` (or by ``base``'s
    for every figure); lower is better for all of them."""
    result: dict[str, dict[str, float]] = {}
    for name, data in variants.items():
        result[name] = {}
        for figure, (part, key, default_base) in FIGURES.items():
            reference = variants.get(base or default_base)
            value = data.get(part, {}).get(key, float("nan"))
            denominator = reference.get(part, {}).get(key) if reference else None
            result[name][figure] = (
                round(value / denominator, 3) if denominator and value == value else float("nan")
            )
    return result


def storm_ratios(storms: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Storm figures divided by floor-jwt's."""
    base = storms.get("floor-jwt")
    if not base:
        return {}
    keys = ("seconds_to_all_welcomed", "cpu_us_per_connect")
    return {
        name: {key: round(data[key] / base[key], 3) if base[key] else float("nan") for key in keys}
        for name, data in storms.items()
    }


TARGETS = {
    "cpu_per_targeted_delivery": 1.25,
    "cpu_per_broadcast_delivery": 1.1,
    "p99_latency": 1.5,
    "rss_per_idle_connection": 1.3,
    "cpu_per_connect": 1.15,
    "storm_seconds_to_all_welcomed": 1.3,
    "capacity_broadcast_time": 1.2,
}
"""notifykit's targets as ratios to the floor (issue 10): per delivery and latency to
``floor``; memory, connect cost, storm and capacity to ``floor-jwt``."""


def machine() -> dict[str, Any]:
    """What this ran on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0
    with contextlib.suppress(ValueError, OSError):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        redis_version = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        redis_version = "?"
    packages: dict[str, str | None] = {}
    for name in (
        "notifykit",
        "redis",
        "hiredis",
        "websockets",
        "uvicorn",
        "uvloop",
        "httptools",
        "starlette",
        "python-socketio",
        "python-engineio",
        "broadcaster",
        "anyio",
        "wsproto",
        "PyJWT",
    ):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis_server": redis_version,
        "packages": packages,
    }


async def main_async(
    plan: Plan,
    names: list[str],
    out: Path,
    scaling: bool,
    idle: bool,
    storming: bool = True,
    with_capacity: bool = False,
) -> dict[str, Any]:
    """Run the plan; return the results (logs go next to ``out``)."""
    started = time.monotonic()
    logs = out.parent / "logs" / out.stem
    logs.mkdir(parents=True, exist_ok=True)
    has_propagator = importlib.util.find_spec("notifykit.redis") is not None
    chosen = []
    skipped = []
    for name in names:
        variant = VARIANTS[name]
        if variant.needs_redis_propagator and not has_propagator:
            skipped.append(name)
        else:
            chosen.append(variant)
    if skipped:
        log(f"notifykit.redis is missing: skipping {', '.join(skipped)}")
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "plan": asdict(plan),
        "skipped": skipped,
        "variants": {},
        "scaling": {},
    }
    with RedisServer() as redis:
        bench = Bench(plan, redis, logs)
        result["variants"] = await bench.main(chosen, idle)
        scaled = [v for v in chosen if v.name in plan.scaling_variants]
        if scaling and scaled:
            curves: dict[str, dict[str, Any]] = {v.name: {} for v in scaled}
            for k in plan.scaling:
                if k == plan.instances:  # measured above, same workload
                    for v in scaled:
                        curves[v.name][str(k)] = result["variants"][v.name]["targeted"]
                    continue
                log(f"scaling: {k} instances of {', '.join(v.name for v in scaled)}")
                for name, summary in (await bench.scaling(scaled, k)).items():
                    curves[name][str(k)] = summary
            result["scaling"] = {
                name: dict(sorted(curve.items(), key=lambda kv: int(kv[0])))
                for name, curve in curves.items()
            }
        if storming:
            names_ = [n for n in plan.storm_variants if n in VARIANTS]
            log(f"storm: {plan.storm_n} connections at once, {', '.join(names_)}")
            result["storm"] = await storm(
                redis,
                [VARIANTS[n] for n in names_],
                plan.storm_n,
                plan.storm_rounds,
                plan.storm_clients,
                logs,
                log,
            )
            result["storm_ratios"] = storm_ratios(result["storm"])
        if with_capacity:
            result["capacity"] = await capacity(
                redis,
                [VARIANTS[n] for n in plan.capacity_variants],
                plan.capacity_connections,
                plan.capacity_clients,
                plan.capacity_broadcasts,
                logs,
                log,
            )
    result["ratios"] = ratios(result["variants"])
    result["ratios_to_raw"] = ratios(result["variants"], base="raw")
    result["targets"] = TARGETS
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description="notifykit benchmark (see docs/performance.md)")
    parser.add_argument("--quick", action="store_true", help="a 1-2 minute run")
    parser.add_argument("--out", type=Path, help="JSON output (default bench/results/<time>.json)")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {','.join(VARIANTS)}",
    )
    parser.add_argument("--no-scaling", action="store_true", help="skip the K=1,2,4 curve")
    parser.add_argument("--no-idle", action="store_true", help="skip the idle-RSS figure")
    parser.add_argument("--no-storm", action="store_true", help="skip the reconnect storm")
    parser.add_argument(
        "--capacity", action="store_true", help="also fill one process (bench.capacity)"
    )
    parser.add_argument("--storm-n", type=int, help="clients in the reconnect storm")
    parser.add_argument("--chart", type=Path, help="PNG chart (default: next to the JSON)")
    parser.add_argument("--rounds", type=int, help="override the plan's rounds per figure")
    args = parser.parse_args()
    names = parse_variants(parser, args.variants)
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = replace(
            plan,
            rounds=args.rounds,
            latency_rounds=args.rounds,
            scaling_rounds=args.rounds,
            idle_rounds=args.rounds,
            storm_rounds=args.rounds,
        )
    if args.storm_n:
        plan = replace(plan, storm_n=args.storm_n)
    out = args.out or HERE / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    result = asyncio.run(
        main_async(
            plan,
            names,
            out,
            not args.no_scaling,
            not args.no_idle,
            not args.no_storm,
            args.capacity,
        )
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(render(result))
    log(f"wrote {out} in {result['seconds']} s")
    chart = args.chart or out.with_suffix(".png")
    try:
        from .chart import draw
    except ImportError as exc:  # matplotlib is in the bench extra
        log(f"no chart: {exc}")
    else:
        draw(result, chart)
        log(f"wrote {chart}")


if __name__ == "__main__":
    main()
