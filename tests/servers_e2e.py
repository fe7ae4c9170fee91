"""Real servers and real clients for the end-to-end tests.

:func:`start_serve` runs ``notifykit serve`` (``python -m notifykit serve`` from this venv) in a
subprocess on a free port and returns once ``/healthz`` answers; :func:`start_app` does the same
for any ASGI app under uvicorn. Their output goes to files; :func:`log_on_failure` shows it
with a failing test. The client helpers below speak to them with ``websockets`` and ``httpx``.
Every wait is bounded.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from notifykit.jwt import mint_token

SECRET = "e2e-secret-" + "0123456789abcdef" * 3
"""The JWT secret every test server is started with."""
OTHER_SECRET = "e2e-other-secret-" + "fedcba9876543210" * 3
API_KEY = "e2e-api-key-0123456789"
SUBPROTOCOL = "notifykit.v1"
STARTUP_TIMEOUT = 20.0
FRAME_TIMEOUT = 5.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ``NOTIFYKIT_*`` variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFYKIT_")}
    env.update(extra)
    return env


@dataclass
class Server:
    """A server running in a subprocess, with its output captured to files."""

    process: subprocess.Popen[bytes]
    port: int
    logs: Path

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:<port>``."""
        return f"ws://127.0.0.1:{self.port}"

    def stdout(self) -> str:
        """Everything the server printed to stdout so far ("" once stopped)."""
        return self._read("stdout")

    def stderr(self) -> str:
        """Everything the server printed to stderr so far ("" once stopped)."""
        return self._read("stderr")

    def _read(self, name: str) -> str:
        try:
            return (self.logs / name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def output(self) -> str:
        """stdout and stderr, labelled."""
        return f"--- stdout ---\n{self.stdout()}--- stderr ---\n{self.stderr()}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig``, wait (bounded) for the process to end, kill it if it does not; then
        delete its log files."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        shutil.rmtree(self.logs, ignore_errors=True)
        return self.process.returncode


def _start(
    argv: Callable[[int], Sequence[str]],
    *,
    env: dict[str, str] | None,
    health_path: str,
    cwd: str | Path | None = None,
    port: int | None = None,
) -> Server:
    for _attempt in range(3 if port is None else 1):  # a "free" port can be taken meanwhile
        use = port if port is not None else free_port()
        logs = Path(tempfile.mkdtemp(prefix="notifykit-e2e-"))
        with open(logs / "stdout", "wb") as out, open(logs / "stderr", "wb") as err:
            process = subprocess.Popen(
                list(argv(use)),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env if env is not None else clean_env(),
                cwd=cwd,
            )
        server = Server(process, use, logs)
        if _wait_healthy(server, health_path):
            return server
        output = server.output()
        server.stop(signal.SIGKILL)
        if "address already in use" not in output.lower():
            raise RuntimeError(f"server did not start: {list(argv(use))}\n{output}")
    raise RuntimeError("no free port found for the server")


def _wait_healthy(server: Server, path: str) -> bool:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                return False
            try:
                if client.get(server.url + path).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    return False


def start_command(
    argv: Callable[[int], Sequence[str]],
    *,
    env: dict[str, str],
    health_path: str,
    cwd: str | Path | None = None,
) -> Server:
    """Run the command ``argv(port)`` for a free port and wait until ``health_path`` answers
    200 (retrying on another port if that one was taken meanwhile)."""
    return _start(argv, env=env, health_path=health_path, cwd=cwd)


def start_serve(
    *flags: str,
    env: dict[str, str] | None = None,
    port: int | None = None,
    launcher: Sequence[str] = (),
) -> Server:
    """Run ``notifykit serve --port <port> <flags>`` and wait until ``/healthz`` answers.

    ``port`` defaults to a free one; give the port of a stopped server to restart it.
    ``launcher`` comes first on the command line (e.g. ``sh -c '<ulimit> && exec "$0" "$@"'``)."""
    return _start(
        lambda port: [
            *launcher,
            sys.executable,
            "-m",
            "notifykit",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *flags,
        ],
        env=env,
        health_path="/healthz",
        port=port,
    )


def start_serves(
    *flag_lists: Sequence[str], envs: Sequence[dict[str, str] | None] | None = None
) -> list[Server]:
    """:func:`start_serve` once per entry of ``flag_lists`` (with the matching entry of
    ``envs``), all at once; if one fails to start, the others are stopped and it raises."""
    env_list = list(envs) if envs is not None else [None] * len(flag_lists)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(flag_lists) or 1) as pool:
        futures = [
            pool.submit(start_serve, *flags, env=env)
            for flags, env in zip(flag_lists, env_list, strict=True)
        ]
        concurrent.futures.wait(futures)
    started = [f.result() for f in futures if f.exception() is None]
    failures = [f.exception() for f in futures if f.exception() is not None]
    if failures:
        for server in started:
            server.stop(signal.SIGKILL)
        raise failures[0]  # type: ignore[misc]
    return started


def start_app(app: str, *, app_dir: Path, health_path: str, env: dict[str, str]) -> Server:
    """Run ``uvicorn <app>`` (``module:attribute``) from ``app_dir`` on a free port."""
    return _start(
        lambda port: [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--app-dir",
            str(app_dir),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--lifespan",
            "on",
            "--log-level",
            "warning",
        ],
        env=env,
        health_path=health_path,
    )


@contextlib.contextmanager
def log_on_failure(request: pytest.FixtureRequest, *servers: Server) -> Iterator[None]:
    """Attach what ``servers`` logged during a test to its report (shown when it fails)."""
    marks = [len(s.stderr()) for s in servers]
    try:
        yield
    finally:
        for server, mark in zip(servers, marks, strict=True):
            text = server.stderr()[mark:]
            if text:
                request.node.add_report_section("teardown", f"server :{server.port}", text)


# --- clients ------------------------------------------------------------------------------


def token(user: str, *, ttl: float = 600, secret: str = SECRET, **claims: Any) -> str:
    """A valid HS256 token for ``user`` (extra claims as keyword arguments)."""
    return mint_token(user, secret=secret, ttl=ttl, claims=claims or None)


@contextlib.asynccontextmanager
async def client(
    server: Server,
    tok: str | None = None,
    *,
    via: str = "header",
    origin: str | None = None,
    path: str = "/ws",
    subprotocols: Sequence[str] = (SUBPROTOCOL,),
) -> AsyncIterator[ClientConnection]:
    """A websocket client; the token goes in the ``Authorization`` header, a ``bearer.``
    subprotocol (``via="subprotocol"``) or the query string (``via="query"``)."""
    url = server.ws_url + path
    headers: dict[str, str] = {}
    protocols = list(subprotocols)
    if tok is not None and via == "header":
        headers["Authorization"] = f"Bearer {tok}"
    elif tok is not None and via == "subprotocol":
        protocols.append(f"bearer.{tok}")
    elif tok is not None and via == "query":
        url += f"?token={tok}"
    async with connect(
        url,
        additional_headers=headers,
        subprotocols=protocols or None,
        origin=origin,
        compression=None,  # frame sizes on the wire are what the tests say
        open_timeout=FRAME_TIMEOUT,
        close_timeout=2,
    ) as ws:
        yield ws


def upgrade_request(port: int, *headers: str, target: str = "/ws") -> bytes:
    """The bytes of a websocket upgrade request, for raw-socket tests, with extra
    ``headers`` (``"Name: value"``)."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def recv(ws: ClientConnection, within: float = FRAME_TIMEOUT) -> dict[str, Any]:
    """The next frame, parsed; fails the test if none comes ``within`` seconds."""
    with anyio.fail_after(within):
        frame: dict[str, Any] = json.loads(await ws.recv())
        return frame


async def send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    """Send one JSON frame."""
    await ws.send(json.dumps(frame))


async def welcome(ws: ClientConnection) -> dict[str, Any]:
    """Receive the ``welcome`` frame (it must be the first one)."""
    frame = await recv(ws)
    assert frame["type"] == "welcome", frame
    return frame


async def closed(
    ws: ClientConnection, within: float = FRAME_TIMEOUT
) -> tuple[int, str, list[dict[str, Any]]]:
    """Wait for the server to close; return its close code, reason and any frames before it."""
    frames: list[dict[str, Any]] = []
    with anyio.fail_after(within):
        try:
            while True:
                frames.append(json.loads(await ws.recv()))
        except ConnectionClosed as exc:
            if exc.rcvd is None:
                raise AssertionError(f"connection lost without a close frame: {exc}") from exc
            return exc.rcvd.code, exc.rcvd.reason, frames


async def publish(
    server: Server, body: dict[str, Any], *, key: str = API_KEY, prefix: str = ""
) -> str:
    """POST ``body`` to ``/publish`` and return the notification id (asserting 202)."""
    async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
        response = await http.post(
            f"{server.url}{prefix}/publish",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
        )
    assert response.status_code == 202, response.text
    notification_id: str = response.json()["id"]
    return notification_id


async def notification(ws: ClientConnection) -> dict[str, Any]:
    """Receive the next frame, which must be a ``notification``."""
    frame = await recv(ws)
    assert frame["type"] == "notification", frame
    return frame


async def sentinel(via: Server, *sockets: ClientConnection) -> str:
    """Broadcast a sentinel through ``via``; it must be the next frame on each socket.

    Proves absence: whatever a socket should not have received would have come before it."""
    sentinel_id = await publish(via, {"event": "sentinel", "broadcast": True})
    for ws in sockets:
        frame = await notification(ws)
        assert (frame["event"], frame["id"]) == ("sentinel", sentinel_id), frame
    return sentinel_id


async def health(server: Server, prefix: str = "") -> dict[str, Any]:
    """``GET /healthz``."""
    async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
        response = await http.get(f"{server.url}{prefix}/healthz")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_for_health(
    server: Server,
    want: Callable[[dict[str, Any]], bool],
    *,
    within: float = 10.0,
    prefix: str = "",
) -> dict[str, Any]:
    """Poll ``/healthz`` until ``want(body)``; fail with the last body after ``within`` s."""
    body: dict[str, Any] = {}
    with anyio.move_on_after(within):
        while True:
            body = await health(server, prefix)
            if want(body):
                return body
            await anyio.sleep(0.05)
    raise AssertionError(f"/healthz never matched within {within} s; last: {body}")


async def metrics(server: Server) -> dict[str, float]:
    """``GET /metrics``, parsed: metric name → value."""
    async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
        response = await http.get(f"{server.url}/metrics")
    assert response.status_code == 200, response.text
    values: dict[str, float] = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values
