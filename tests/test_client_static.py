"""What the app serves to browsers: ``/client.js`` always, the demo only with ``--demo``.

Against real ``notifykit serve`` processes; and the wheel really carries the files.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import anyio
import httpx
import pytest
from servers_e2e import API_KEY, SECRET, Server, client, notification, start_serve, welcome

from notifykit.jwt import JWTAuthenticator

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
STATIC = files("notifykit").joinpath("static")
PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]


@pytest.fixture(scope="module")
def plain() -> Iterator[Server]:
    server = start_serve("--jwt-secret", SECRET, "--api-key", API_KEY)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def demo() -> Iterator[Server]:
    server = start_serve("--demo", "--jwt-secret", SECRET, "--api-key", API_KEY)
    yield server
    server.stop()


def test_every_app_serves_the_browser_client_as_a_module(plain: Server) -> None:
    response = httpx.get(plain.url + "/client.js")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.content == STATIC.joinpath("client.js").read_bytes()
    assert b"export class NotifyClient" in response.content


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/demo"), ("GET", "/demo/demo.js"), ("POST", "/demo/token"), ("POST", "/demo/send")],
)
def test_without_demo_there_is_no_demo_page_and_no_way_to_mint_or_send(
    plain: Server, method: str, path: str
) -> None:
    response = httpx.request(method, plain.url + path, json={"user": "alice"})
    assert response.status_code in (404, 405)


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/demo", "text/html; charset=utf-8"),
        ("/demo/demo.js", "text/javascript; charset=utf-8"),
        ("/demo/demo.css", "text/css; charset=utf-8"),
        ("/demo/favicon.svg", "image/svg+xml"),
        ("/client.js", "text/javascript; charset=utf-8"),
    ],
)
def test_with_demo_the_page_and_its_files_are_served(
    demo: Server, path: str, media_type: str
) -> None:
    response = httpx.get(demo.url + path)
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type


@pytest.mark.anyio
async def test_the_demo_mints_a_token_the_server_accepts_for_that_user_and_every_topic(
    demo: Server,
) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(demo.url + "/demo/token", json={"user": "  alice "})
    assert response.status_code == 200
    minted = response.json()["token"]
    principal = await JWTAuthenticator(secret=SECRET).authenticate(minted)
    assert principal.user_id == "alice"
    assert principal.claims["topics"] == ["*"]
    async with client(demo, minted) as ws:
        assert (await welcome(ws))["user"] == "alice"


@pytest.mark.parametrize(
    "body", [{}, {"user": ""}, {"user": "   "}, {"user": 7}, [], {"user": "x" * 300}]
)
def test_the_demo_refuses_to_mint_without_a_usable_user_name(demo: Server, body: object) -> None:
    response = httpx.post(demo.url + "/demo/token", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


@pytest.mark.anyio
async def test_the_demo_sends_a_publish_body_without_an_api_key(demo: Server) -> None:
    async with httpx.AsyncClient() as http:
        minted = (await http.post(demo.url + "/demo/token", json={"user": "bob"})).json()["token"]
    async with client(demo, minted) as ws:
        await welcome(ws)
        async with httpx.AsyncClient() as http:
            response = await http.post(
                demo.url + "/demo/send", json={"event": "hi", "data": {"n": 1}, "user": "bob"}
            )
        assert response.status_code == 202
        with anyio.fail_after(5):
            frame = await notification(ws)
        assert (frame["id"], frame["event"], frame["data"]) == (
            response.json()["id"],
            "hi",
            {"n": 1},
        )


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"event": "hi"}', 400),  # no target
        (b"not json", 400),
        (b'{"event": "hi", "user": "bob", "exclude": 7}', 400),
        (b"x" * (64 * 1024 + 1), 413),
    ],
)
def test_the_demo_refuses_what_publish_would_refuse(demo: Server, body: bytes, status: int) -> None:
    response = httpx.post(demo.url + "/demo/send", content=body)
    assert response.status_code == status


def test_the_wheel_carries_the_browser_client_and_the_demo(tmp_path: Path) -> None:
    subprocess.run(
        [*PIP_WHEEL, "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("notifykit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("client.js", "demo.html", "demo.css", "demo.js", "favicon.svg"):
        assert f"notifykit/static/{name}" in names
    assert "notifykit/client/__init__.py" in names
