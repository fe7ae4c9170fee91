"""Does one client that stops reading slow everyone else down? ``python -m bench.stalled``.

Starts ``notifykit serve`` (in memory) and connects N clients that read everything, then
broadcasts numbered notifications at a fixed rate and measures each client's publish → receive
latency from the notification's ``ts``. It does so twice, in turns: with only those clients,
and with one more client that stops reading after its welcome (a 4 KiB receive buffer, so the
server's queue for it fills and it is closed 4008, then dropped). It prints p50/p99 for both
phases and writes JSON; nothing is asserted (tests/test_e2e_hardening.py checks that the others
lose nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from notifykit import mint_token

from .common import API_KEY, SECRET, free_port

SUBPROTOCOL = "notifykit.v1"


def start_server(port: int) -> subprocess.Popen[bytes]:
    """``notifykit serve`` on ``port``, in memory, with the bench's secret and key."""
    argv = [sys.executable, "-m", "notifykit", "serve", "--port", str(port)]
    argv += ["--jwt-secret", SECRET, "--api-key", API_KEY, "--log-level", "warning"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_healthy(url: str) -> None:
    async with httpx.AsyncClient(timeout=1) as http:
        for _ in range(200):
            try:
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("the server did not start")


async def reader(ws: ClientConnection, latencies: list[float], stop: asyncio.Event) -> None:
    """Read notifications and record publish → receive latencies (ms) until ``stop``."""
    while not stop.is_set():
        try:
            text = await asyncio.wait_for(ws.recv(), 0.2)
        except TimeoutError:
            continue
        frame = json.loads(text)
        if frame.get("type") == "notification":
            latencies.append(time.time() * 1000 - frame["ts"])


def stall(port: int, user: str) -> socket.socket:
    """A client that completes its handshake and then never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    request = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n"
        f"Authorization: Bearer {mint_token(user, secret=SECRET)}\r\n\r\n"
    )
    sock.sendall(request.encode())
    return sock


async def phase(
    url: str, port: int, clients: int, rate: float, seconds: float, stalled: bool
) -> dict[str, Any]:
    """Broadcast at ``rate`` for ``seconds`` to ``clients`` readers (and one stalled one)."""
    latencies: list[float] = []
    stop = asyncio.Event()
    sockets = []
    async with asyncio.TaskGroup() as tasks:
        for n in range(clients):
            ws = await connect(
                f"{url.replace('http', 'ws')}/ws",
                additional_headers={
                    "Authorization": f"Bearer {mint_token(f'r{n}', secret=SECRET)}"
                },
                subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                compression=None,
                max_queue=None,
            )
            sockets.append(ws)
            tasks.create_task(reader(ws, latencies, stop))
        slow = stall(port, "stalled") if stalled else None
        pad = "x" * 1000
        async with httpx.AsyncClient(timeout=5) as http:
            sent, start = 0, time.monotonic()
            while (elapsed := time.monotonic() - start) < seconds:
                body = {"event": "tick", "broadcast": True, "data": {"n": sent, "pad": pad}}
                await http.post(
                    f"{url}/publish", json=body, headers={"Authorization": f"Bearer {API_KEY}"}
                )
                sent += 1
                await asyncio.sleep(max(0.0, sent / rate - elapsed))
        await asyncio.sleep(0.5)
        stop.set()
    for ws in sockets:
        await ws.close()
    if slow is not None:
        slow.close()
    expected = sent * clients
    ordered = sorted(latencies)
    return {
        "stalled_client": stalled,
        "sent": sent,
        "received": len(latencies),
        "expected": expected,
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 3),
    }


async def main(clients: int, rate: float, seconds: float, rounds: int) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(port)
    try:
        await wait_healthy(url)
        results = []
        for _ in range(rounds):  # the phases take turns, so background load hits both alike
            for stalled in (False, True):
                results.append(await phase(url, port, clients, rate, seconds, stalled))
                print(json.dumps(results[-1]), flush=True)
    finally:
        process.terminate()
        process.wait(10)
    summary: dict[str, Any] = {"clients": clients, "rate": rate, "seconds": seconds}
    for stalled in (False, True):
        mine = [r for r in results if r["stalled_client"] is stalled]
        name = "with_stalled" if stalled else "without"
        summary[name] = {
            "p50_ms": statistics.median(r["p50_ms"] for r in mine),
            "p99_ms": statistics.median(r["p99_ms"] for r in mine),
            "lost": sum(r["expected"] - r["received"] for r in mine),
        }
    return {"summary": summary, "rounds": results}


def cli() -> None:
    """Parse arguments, run, print and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate", type=float, default=200.0, help="broadcasts per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="per phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result = asyncio.run(main(args.clients, args.rate, args.seconds, args.rounds))
    print(json.dumps(result["summary"], indent=2))
    out = Path(args.out or f"bench/results/stalled-{os.getpid()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    cli()
