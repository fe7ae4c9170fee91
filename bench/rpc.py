"""Line-delimited JSON commands between the orchestrator and its worker processes.

A worker reads one JSON object per line on stdin (``{"op": name, ...}``), awaits the handler
``op_<name>(**args)`` and writes the result as one JSON line on stdout (errors as
``{"error": "..."}``). The orchestrator side, :class:`Worker`, bounds every call in time.
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from pathlib import Path
from typing import Any


async def serve_commands(handler: Any) -> None:
    """Run a worker's command loop until ``exit`` or end of stdin."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        request = json.loads(line)
        op = request.pop("op")
        if op == "exit":
            _reply({"ok": True})
            return
        try:
            result = await getattr(handler, f"op_{op}")(**request)
        except Exception as exc:
            traceback.print_exc()
            result = {"error": f"{type(exc).__name__}: {exc}"}
        _reply(result)


def _reply(result: Any) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


class WorkerError(RuntimeError):
    """A worker answered with an error, died, or did not answer in time."""


class Worker:
    """An orchestrator-side handle on a worker process (``python -m <module>``)."""

    def __init__(self, module: str, args: list[str], log: Path) -> None:
        self.module = module
        self.args = args
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        """The worker's process id."""
        if self.process is None:
            raise WorkerError(f"{self.module} is not running")
        return self.process.pid

    async def start(self) -> None:
        """Start the process; its stderr goes to the log file."""
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                self.module,
                *self.args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                limit=64 * 1024 * 1024,
            )

    async def call(self, op: str, within: float = 60.0, **args: Any) -> Any:
        """Send one command and return the worker's answer."""
        process = self.process
        if process is None or process.stdin is None or process.stdout is None:
            raise WorkerError(f"{self.module} is not running")
        process.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        try:
            await process.stdin.drain()
            line = await asyncio.wait_for(process.stdout.readline(), within)
        except (TimeoutError, ConnectionError) as exc:
            raise WorkerError(f"{self.module} did not answer {op!r} in {within} s") from exc
        if not line:
            raise WorkerError(f"{self.module} died; see {self.log}")
        result = json.loads(line)
        if isinstance(result, dict) and "error" in result:
            raise WorkerError(f"{self.module} {op}: {result['error']}")
        return result

    async def stop(self) -> None:
        """Ask the worker to exit; kill it if it does not within 5 s."""
        process = self.process
        if process is None:
            return
        self.process = None
        if process.returncode is None:
            try:
                if process.stdin is not None:
                    process.stdin.write(b'{"op": "exit"}\n')
                    await process.stdin.drain()
                await asyncio.wait_for(process.wait(), 5)
            except (TimeoutError, ConnectionError):
                process.kill()
                await process.wait()
