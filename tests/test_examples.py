"""Every example under examples/ runs as a real server process and does what its README says.

* ``fastapi_app`` under uvicorn: a session login of the app authenticates the websocket, and a
  route notifies the logged-in user;
* ``django_project`` under uvicorn, two processes on one Redis and one database: a user logged
  in with Django's login form connects to one process, a sync view on the other notifies them,
  and so does ``manage.py notify``; and under daphne (no lifespan, no Redis) on its own;
* ``websockets_server``: ``server.py``, ``client.py`` and ``publish.py`` as a user runs them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from servers import RedisServer
from servers_e2e import (
    FRAME_TIMEOUT,
    SECRET,
    Server,
    clean_env,
    client,
    closed,
    log_on_failure,
    notification,
    recv,
    send,
    start_app,
    start_command,
    token,
    wait_for_health,
    welcome,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin, Subprotocol

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ORIGIN = "http://shop.test"


def uvicorn(app: str, app_dir: Path, env: dict[str, str]) -> Server:
    return start_app(app, app_dir=app_dir, health_path="/healthz", env=env)


# --- FastAPI: the app's own session authenticates the websocket ------------------------------


@pytest.fixture(scope="module")
def fastapi_app() -> Iterator[Server]:
    env = clean_env(SESSION_SECRET="s" * 40, JWT_SECRET=SECRET, ALLOWED_ORIGIN=ORIGIN)
    server = uvicorn("app:app", EXAMPLES / "fastapi_app", env)
    yield server
    server.stop()


async def fastapi_login(server: Server, user: str) -> httpx.Cookies:
    async with httpx.AsyncClient(base_url=server.url, timeout=FRAME_TIMEOUT) as http:
        response = await http.post("/login", json={"user": user})
        assert response.status_code == 200, response.text
        return http.cookies


@contextlib.asynccontextmanager
async def session_client(
    server: Server, path: str, cookies: httpx.Cookies, origin: str
) -> AsyncIterator[ClientConnection]:
    """A browser-like websocket client: the session cookies, an Origin, no token."""
    cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
    async with connect(
        server.ws_url + path,
        additional_headers={"Cookie": cookie} if cookie else {},
        origin=Origin(origin),
        subprotocols=[Subprotocol("notifykit.v1")],
        open_timeout=FRAME_TIMEOUT,
        close_timeout=2,
    ) as ws:
        yield ws


async def test_fastapi_a_logged_in_browser_is_notified_by_an_app_route(
    request: pytest.FixtureRequest, fastapi_app: Server
) -> None:
    with log_on_failure(request, fastapi_app):
        cookies = await fastapi_login(fastapi_app, "alice")
        async with session_client(fastapi_app, "/notify/ws", cookies, ORIGIN) as ws:
            assert (await welcome(ws))["user"] == "alice"
            async with httpx.AsyncClient(
                base_url=fastapi_app.url, cookies=cookies, timeout=FRAME_TIMEOUT
            ) as http:
                shipped = (await http.post("/orders/7/ship")).json()
            frame = await notification(ws)
            assert frame["id"] == shipped["notification"]
            assert (frame["event"], frame["data"]) == ("order.shipped", {"order": 7})


async def test_fastapi_without_a_login_or_from_another_site_the_websocket_is_refused(
    fastapi_app: Server,
) -> None:
    async with session_client(fastapi_app, "/notify/ws", httpx.Cookies(), ORIGIN) as ws:
        assert await closed(ws) == (4001, "not authenticated: log in first", [])
    cookies = await fastapi_login(fastapi_app, "alice")
    evil = "https://evil.example"
    async with session_client(fastapi_app, "/notify/ws", cookies, evil) as ws:
        assert await closed(ws) == (4003, "origin not allowed", [])


async def test_fastapi_a_token_client_is_still_served_and_the_page_loads(
    fastapi_app: Server,
) -> None:
    async with client(fastapi_app, token("bob"), path="/notify/ws") as ws:
        assert (await welcome(ws))["user"] == "bob"
    async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
        page = await http.get(fastapi_app.url + "/")
    assert page.status_code == 200
    assert "/notify/ws" in page.text


# --- Django Channels: two processes on one Redis, a sync view, a management command ----------


@dataclass
class DjangoSite:
    env: dict[str, str]
    servers: list[Server]


def django_env(tmp: Path, **extra: str) -> dict[str, str]:
    return clean_env(
        DJANGO_SECRET_KEY="k" * 50,
        SQLITE_PATH=str(tmp / "db.sqlite3"),
        ALLOWED_ORIGINS=ORIGIN,
        NOTIFYKIT_JWT_SECRET=SECRET,
        DJANGO_SUPERUSER_PASSWORD="pw-alice-123",
        **extra,
    )


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=EXAMPLES / "django_project",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def prepare_database(env: dict[str, str]) -> None:
    manage(env, "migrate", "--noinput")
    manage(env, "createsuperuser", "--noinput", "--username", "alice", "--email", "a@shop.test")


@pytest.fixture(scope="module")
def django_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DjangoSite]:
    tmp = tmp_path_factory.mktemp("django")
    redis = RedisServer(tmp / "redis")
    redis.start()
    servers: list[Server] = []
    try:
        env = django_env(tmp, REDIS_URL=redis.url)
        prepare_database(env)
        for _ in range(2):
            servers.append(uvicorn("shop.asgi:application", EXAMPLES / "django_project", env))
        yield DjangoSite(env, servers)
    finally:
        for server in servers:
            server.stop()
        redis.stop()


async def django_login(server: Server, username: str, password: str) -> httpx.Cookies:
    """Log in through Django's own login form (CSRF token included)."""
    async with httpx.AsyncClient(base_url=server.url, timeout=FRAME_TIMEOUT) as http:
        form = await http.get("/accounts/login/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert csrf is not None, form.text
        response = await http.post(
            "/accounts/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": csrf[1]},
        )
        assert response.status_code == 302, response.text
        assert "sessionid" in http.cookies
        await http.get("/")  # the page sets the CSRF cookie the ship button sends
        return http.cookies


async def ship(server: Server, cookies: httpx.Cookies, order: int) -> str:
    async with httpx.AsyncClient(
        base_url=server.url, cookies=cookies, timeout=FRAME_TIMEOUT
    ) as http:
        response = await http.post(
            f"/orders/{order}/ship/", headers={"X-CSRFToken": cookies["csrftoken"]}
        )
    assert response.status_code == 200, response.text
    notification_id: str = response.json()["notification"]
    return notification_id


@pytest.mark.redis
async def test_django_a_view_on_one_process_notifies_the_user_connected_to_the_other(
    request: pytest.FixtureRequest, django_site: DjangoSite
) -> None:
    front, back = django_site.servers
    with log_on_failure(request, front, back):
        cookies = await django_login(front, "alice", "pw-alice-123")
        async with session_client(back, "/ws/notify/", cookies, ORIGIN) as ws:
            alice_id = (await welcome(ws))["user"]
            sent = await ship(front, cookies, 7)  # a sync view, on the other process
            frame = await notification(ws)
            assert (frame["id"], frame["event"]) == (sent, "order.shipped")
            assert frame["data"] == {"order": 7, "by": "view"}

            # A management command: no event loop, no hub, one PUBLISH.
            output = await anyio.to_thread.run_sync(
                lambda: manage(
                    django_site.env, "notify", "alice", "report.ready", "--data", '{"n": 1}'
                )
            )
            frame = await notification(ws)
            assert (frame["id"], frame["data"]) == (output.strip(), {"n": 1})

            # Claims from the Django user: alice is staff, so the staff topics are hers.
            await send(ws, {"type": "subscribe", "topic": "staff:alerts", "ref": "s"})
            assert (await recv(ws))["type"] == "subscribed"
        assert alice_id == "1"


@pytest.mark.redis
async def test_django_no_session_is_refused_and_a_token_client_is_served(
    django_site: DjangoSite,
) -> None:
    server = django_site.servers[0]
    async with session_client(server, "/ws/notify/", httpx.Cookies(), ORIGIN) as ws:
        code, _reason, frames = await closed(ws)
        assert (code, frames) == (4001, [])
    async with client(server, token("7"), path="/ws/notify/") as ws:
        assert (await welcome(ws))["user"] == "7"


async def test_django_under_daphne_the_first_websocket_starts_the_hub(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    env = django_env(tmp_path)  # no Redis: one process, notify_user_sync uses async_to_sync
    prepare_database(env)
    server = start_command(
        lambda port: [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "shop.asgi:application",
        ],
        env=env,
        health_path="/healthz",
        cwd=EXAMPLES / "django_project",
    )
    try:
        with log_on_failure(request, server):
            assert not (await wait_for_health(server, lambda h: True))["running"]
            cookies = await django_login(server, "alice", "pw-alice-123")
            async with session_client(server, "/ws/notify/", cookies, ORIGIN) as ws:
                await welcome(ws)
                body = await wait_for_health(server, lambda h: True)
                assert (body["running"], body["connections"]) == (True, 1)
                sent = await ship(server, cookies, 9)
                assert (await notification(ws))["id"] == sent
    finally:
        server.stop()


# --- websockets: server.py, client.py, publish.py ------------------------------------------


def start_websockets_example(env: dict[str, str], *flags: str) -> Server:
    """``python server.py --port <free> <flags>``, once ``/healthz`` answers."""
    server_py = str(EXAMPLES / "websockets_server" / "server.py")
    return start_command(
        lambda port: [sys.executable, server_py, "--port", str(port), *flags],
        env=env,
        health_path="/healthz",
    )


@pytest.fixture(scope="module")
def websockets_example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    redis = RedisServer(tmp_path_factory.mktemp("ws-redis"))
    redis.start()
    env = clean_env(JWT_SECRET=SECRET, REDIS_URL=redis.url)
    try:
        server = start_websockets_example(env, "--ticker", "0.2")
    except BaseException:
        redis.stop()
        raise
    yield server, redis.url
    server.stop()
    redis.stop()


def example_env(redis_url: str) -> dict[str, str]:
    return clean_env(JWT_SECRET=SECRET, REDIS_URL=redis_url)


@pytest.mark.redis
async def test_websockets_publish_py_reaches_a_user_and_anonymous_clients_get_the_ticker(
    websockets_example: tuple[Server, str],
) -> None:
    server, redis_url = websockets_example
    async with client(server, token("alice")) as alice, client(server) as anonymous:
        await welcome(alice)
        await welcome(anonymous)
        result = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                [
                    sys.executable,
                    str(EXAMPLES / "websockets_server" / "publish.py"),
                    "alice",
                    "order.shipped",
                    '{"order": 7}',
                ],
                env=example_env(redis_url),
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        )
        assert result.returncode == 0, result.stderr
        with anyio.fail_after(FRAME_TIMEOUT):
            while (frame := await notification(alice))["event"] == "tick":
                pass
        assert (frame["id"], frame["data"]) == (result.stdout.strip(), {"order": 7})
        assert (await notification(anonymous))["event"] == "tick"


@pytest.mark.redis
async def test_websockets_client_py_prints_what_its_user_receives(
    websockets_example: tuple[Server, str],
) -> None:
    server, redis_url = websockets_example
    command = [
        sys.executable,
        str(EXAMPLES / "websockets_server" / "client.py"),
        "carol",
        server.ws_url + "/ws",
    ]
    async with await anyio.open_process(command, env=example_env(redis_url)) as process:
        assert process.stdout is not None
        lines = BufferedByteReceiveStream(process.stdout)
        try:
            with anyio.fail_after(20):
                first = (await lines.receive_until(b"\n", 65536)).decode()
                assert first.startswith("welcome "), first
                assert json.loads(first.split(" ", 1)[1])["user"] == "carol"
                # The ticker shows that the client prints notifications as they come.
                line = (await lines.receive_until(b"\n", 65536)).decode()
                assert line.startswith("notification "), line
                assert '"event": "tick"' in line
        finally:
            process.send_signal(signal.SIGINT)
            with anyio.move_on_after(10) as waiting:
                await process.wait()
            if waiting.cancelled_caught:
                process.kill()


async def test_websockets_sigterm_closes_clients_with_1001(tmp_path: Path) -> None:
    server = start_websockets_example(clean_env(JWT_SECRET=SECRET))
    try:
        async with client(server, token("dave")) as ws:
            await welcome(ws)
            os.kill(server.process.pid, signal.SIGTERM)
            assert await closed(ws, within=10) == (1001, "server shutting down", [])
        assert await anyio.to_thread.run_sync(server.process.wait, 10) == 0
    finally:
        server.stop(signal.SIGKILL)
