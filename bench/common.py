"""Small shared pieces: bench constants, free ports, /proc readers, percentiles."""

from __future__ import annotations

import json
import os
import resource
import socket
import time
from pathlib import Path

SECRET = "bench-secret-that-is-long-enough-for-hs256!"
"""HS256 secret shared by the servers that verify tokens (>= 32 bytes)."""

API_KEY = "bench-api-key"
PREFIX = "bench"
"""Redis channel prefix every variant uses."""

EVENT = "bench"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_fd_limit() -> None:
    """Lift the soft open-files limit to the hard one (thousands of sockets per process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_ns(pid: int) -> int:
    """CPU time (user + system) a process has used, in ns, summed over its threads.

    Read from ``/proc/<pid>/task/*/schedstat`` (ns resolution); falls back to the
    ``utime + stime`` clock ticks of ``/proc/<pid>/stat`` where schedstat is missing.
    """
    total = 0
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            try:
                total += int(Path(task.path, "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    except OSError:
        return 0
    return total or cpu_ticks_ns(pid)


def cpu_ticks_ns(pid: int) -> int:
    """``utime + stime`` from ``/proc/<pid>/stat``, in ns (10 ms resolution)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident set size of a process (``VmRSS`` in ``/proc/<pid>/status``), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(sorted_values: list[int] | list[float], q: float) -> float:
    """The ``q``-quantile (0-1) of already sorted values, nearest-rank; nan if empty."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[rank])


def median(values: list[float]) -> float:
    """The median of ``values`` (nan if empty)."""
    ordered = sorted(v for v in values if v == v)
    if not ordered:
        return float("nan")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def bench_frame(seq: int, ts_ns: int) -> str:
    """The frame text raw and broadcaster publishers send: shaped and sized like notifykit's
    ``notification`` frame, with the same ``data`` (``s`` sequence, ``t`` publish time)."""
    return json.dumps(
        {
            "type": "notification",
            "id": "0" * 26,
            "event": EVENT,
            "data": {"s": seq, "t": ts_ns},
            "ts": ts_ns // 1_000_000,
        },
        separators=(",", ":"),
    )


def now_ns() -> int:
    """Wall-clock ns: publisher and clients share this clock (one machine)."""
    return time.time_ns()
