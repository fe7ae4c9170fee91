"""docs/http-api.md is true: every example request in it, sent as written to a real
``notifykit serve``, gets the response written under it.

The page's ```` ```http ```` blocks come in pairs, a request then its response. Requests go
over a raw socket exactly as written (``<api-key>`` replaced, ``Host``, ``Connection: close``
and a computed ``Content-Length`` added when absent). Responses are compared on the status,
each header written, and the body: JSON bodies as JSON, where a notification id stands for
any id; text bodies line by line, where ``...`` stands for more lines and a metric's value is
not compared (counters move).
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from servers_e2e import (
    API_KEY,
    FRAME_TIMEOUT,
    SECRET,
    Server,
    client,
    log_on_failure,
    start_serve,
    token,
    welcome,
)

pytestmark = pytest.mark.e2e

PAGE = Path(__file__).resolve().parent.parent / "docs" / "http-api.md"
NOTIFICATION_ID = re.compile(r"[0-9A-V]{26}")
PLACEHOLDER = re.compile(r"<[a-z]+>")
BLOCK = re.compile(r"^```http\n(.*?)^```\n", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Example:
    request: str
    response: str

    @property
    def title(self) -> str:
        return self.request.splitlines()[0]


def examples() -> list[Example]:
    blocks = BLOCK.findall(PAGE.read_text())
    assert len(blocks) % 2 == 0, "every request needs its response"
    pairs = [Example(blocks[i], blocks[i + 1]) for i in range(0, len(blocks), 2)]
    for pair in pairs:
        assert not pair.request.startswith("HTTP/"), pair.request
        assert pair.response.startswith("HTTP/1.1 "), pair.response
    return pairs


EXAMPLES = examples()


def split_message(text: str) -> tuple[str, dict[str, str], str]:
    """First line, headers (lower-case names), body of an HTTP message written in the page."""
    head, _, body = text.partition("\n\n")
    first, *lines = head.splitlines()
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return first, headers, body


def wire_request(example: Example, port: int) -> bytes:
    first, headers, body = split_message(example.request.replace("<api-key>", API_KEY))
    payload = body.rstrip("\n").encode()
    headers.setdefault("host", f"127.0.0.1:{port}")
    headers["connection"] = "close"
    if payload:
        headers.setdefault("content-length", str(len(payload)))
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"{first}\r\n{head}\r\n".encode() + payload


def exchange(data: bytes, port: int) -> tuple[str, dict[str, str], str]:
    with socket.create_connection(("127.0.0.1", port), timeout=FRAME_TIMEOUT) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.decode().partition("\r\n\r\n")
    return split_message(head.replace("\r\n", "\n") + "\n\n" + body)


def matches(expected: Any, actual: Any) -> bool:
    """JSON equality, where an expected notification id stands for any id and a placeholder
    such as ``"<epoch>"`` or ``"<ts>"`` for any string or number."""
    if isinstance(expected, str) and NOTIFICATION_ID.fullmatch(expected):
        return isinstance(actual, str) and NOTIFICATION_ID.fullmatch(actual) is not None
    if isinstance(expected, str) and PLACEHOLDER.fullmatch(expected):
        return isinstance(actual, str | int) and not isinstance(actual, bool)
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(matches(expected[k], actual[k]) for k in expected)
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(matches(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return bool(expected == actual) and type(expected) is type(actual)


def check_text(expected: str, actual: str) -> None:
    wanted = [line for line in expected.splitlines() if line]
    got = [line for line in actual.splitlines() if line]
    more = wanted[-1:] == ["..."]
    if more:
        wanted = wanted[:-1]
    names = [line.rpartition(" ")[0] for line in got]
    for line in wanted:  # every metric written is served (its value moves)
        assert line.rpartition(" ")[0] in names, line
    if not more:
        assert len(wanted) == len(got), actual


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = start_serve("--jwt-secret", SECRET, "--api-key", API_KEY)
    yield srv
    srv.stop()


@pytest.mark.anyio
async def test_every_example_of_the_http_api_page_is_what_the_server_answers(
    request: pytest.FixtureRequest, server: Server
) -> None:
    assert len(EXAMPLES) >= 15
    with log_on_failure(request, server):
        async with client(server, token("42")) as ws:  # "user 42 connected once"
            await welcome(ws)
            for example in EXAMPLES:
                status, headers, body = await anyio.to_thread.run_sync(
                    exchange, wire_request(example, server.port), server.port
                )
                want_status, want_headers, want_body = split_message(example.response)
                assert status == want_status, (example.title, body)
                for name, value in want_headers.items():
                    assert headers.get(name) == value, (example.title, name)
                if want_headers.get("content-type") == "application/json":
                    assert matches(json.loads(want_body), json.loads(body)), (example.title, body)
                else:
                    check_text(want_body, body)


def test_the_page_covers_every_route_of_the_service() -> None:
    from starlette.routing import Route

    from notifykit import Hub, JWTAuthenticator
    from notifykit.adapters.asgi import NotifyApp

    app = NotifyApp(Hub(), JWTAuthenticator(secret=SECRET), api_key=API_KEY)
    paths = {route.path for route in app.http.routes if isinstance(route, Route)}
    routes = {path.replace("{user_id:path}", "<user>") for path in paths}
    page = PAGE.read_text()
    for path in routes:
        assert f"## {'POST' if path == '/publish' else 'GET'} {path}\n" in page, path
