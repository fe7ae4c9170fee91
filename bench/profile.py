"""Profile one server instance under load with py-spy (``pip install py-spy``).

    python -m bench.profile --variant notifykit --workload broadcast --seconds 15

Workloads: ``targeted``, ``broadcast`` (deliveries) and ``connect`` (new authenticated
connections, kept open).

Starts a Redis, K instances of the variant and their clients, keeps the chosen workload
running while ``py-spy record`` samples instance 0, then prints the functions with the most
samples (self and inclusive). The collapsed stacks are kept (``--out``) for a flame graph.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from notifykit import mint_token

from .common import SECRET
from .deploy import VARIANTS, Conn, Deployment, spread
from .redisproc import RedisServer

HERE = Path(__file__).resolve().parent


async def load(
    d: Deployment, workload: str, seconds: float, fresh: Iterator[Conn] | None = None
) -> int:
    """Run ``workload`` rounds back to back for ``seconds``; return the rounds run.

    ``connect`` rounds open 250 new connections (distinct users) from ``fresh``, 64 at a time
    per client process, and keep them open: the profile shows connects, not disconnects.
    """
    deadline = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < deadline:
        if workload == "connect":
            batch = list(itertools.islice(fresh or iter(()), 250))
            if not batch:
                break
            await d.connect(batch)
        elif workload == "broadcast":
            await d.round("broadcast", "broadcast", {"n": 100, "concurrency": 64}, 100)
        else:
            n = 20 * len(d.users)
            args = {"users": d.users, "n": n, "concurrency": 64}
            await d.round("targeted", "targeted", args, d.targeted_expectation(n))
        rounds += 1
    return rounds


def summarize(collapsed: Path, top: int) -> str:
    """Top functions by self and inclusive samples from py-spy's collapsed output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        frames = stack.split(";")
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    by_function: collections.Counter[str] = collections.Counter()
    for name, n in own.items():  # "f (path/file.py:12)" -> "f (path/file.py)"
        function, _, where = name.partition(" (")
        by_function[f"{function} ({where.rsplit(':', 1)[0]})" if where else name] += n
    lines = [f"{total} samples", "", "self, by function:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in by_function.most_common(top)]
    lines += ["", "self, by line:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace, py_spy: str) -> None:
    """Deploy, load, record, summarize."""
    variant = VARIANTS[args.variant]
    logs = HERE / "results" / "logs" / "profile"
    logs.mkdir(parents=True, exist_ok=True)
    out = args.out or HERE / "results" / f"profile-{variant.name}-{args.workload}.txt"
    users = [f"user{i}" for i in range(args.users)]
    tokens = {u: mint_token(u, secret=SECRET, ttl=3600) for u in users}
    fresh: Iterator[Conn] | None = None
    if args.workload == "connect":  # enough new users for the whole recording, fd limit kept
        count = min(18_000 - args.users * 2, int(1_200 * (args.seconds + 3)))
        fresh = iter(
            [
                Conn(i, f"c{i}", 0, mint_token(f"c{i}", secret=SECRET, ttl=3600))
                for i in range(count)
            ]
        )
    with RedisServer() as redis:
        d = Deployment(variant, redis.url, redis.pid, args.instances, logs, prefix="profile")
        async with d:
            await d.connect(spread(users, args.instances, tokens))
            await load(d, args.workload, 2.0, fresh)  # warm up
            recorder = await asyncio.create_subprocess_exec(
                py_spy,
                "record",
                "--pid",
                str(d.servers[0].pid),
                "--duration",
                str(int(args.seconds)),
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
                *(["--native"] if args.native else []),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            rounds = await load(d, args.workload, args.seconds + 1, fresh)
            await recorder.wait()
    print(f"{variant.name}, {args.workload}, {rounds} rounds; stacks in {out}\n")
    print(summarize(out, args.top))


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", default="notifykit", choices=list(VARIANTS))
    parser.add_argument(
        "--workload", default="broadcast", choices=["broadcast", "targeted", "connect"]
    )
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--native", action="store_true", help="C frames too (the GC, the kernel's send)"
    )
    parser.add_argument("--summarize", type=Path, help="only print the summary of stacks kept")
    args = parser.parse_args()
    if args.summarize:
        print(summarize(args.summarize, args.top))
        return
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        sys.exit("py-spy is not installed: pip install py-spy")
    asyncio.run(main_async(args, py_spy))


if __name__ == "__main__":
    main()
