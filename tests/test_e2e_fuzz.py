"""Fuzzing a live ``notifykit serve`` with hypothesis (issue 8: "never a 500 or a crash, never a
leaked connection").

One server runs for the module. Hypothesis sends it websocket sessions — a token from any of
the three places or none, a ``resume`` query string, then text and binary frames: valid-ish
frames with mutated fields, wrong types, unknown types, odd and huge Unicode, deep nesting,
``since`` objects — and ``POST /publish`` bodies. Every session must end in a documented way
(a reply to its last frame, or a documented close code; an HTTP refusal below 500), every
publish must get 202, 400 or 413 with a JSON error. Afterwards the server is still up,
``/metrics`` shows no connection, its file descriptors are back to where they were, and it
logged no traceback.

Bounded: a few hundred examples per test, each a handful of frames with a 5 s timeout.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers_e2e import API_KEY, SECRET, SUBPROTOCOL, Server, start_serve, token
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from notifykit.wire import ErrorCode, Pong, Welcome, parse_server

pytestmark = pytest.mark.e2e

TIMEOUT = 5.0
MAX_FRAME_BYTES = 64 * 1024
END = "fuzz-end"  # the ref of the ping that closes every session

CLOSE_CODES = {1000, 1009, 4001, 4400, 4429}
"""What a fuzzed session may be closed with: a normal close, a frame beyond the transport's
limit, a refused token, bad frames (or a bad ``resume``), too many frames. Never 1011."""
ERROR_CODES = {code.value for code in ErrorCode}

fuzz = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class Target:
    server: Server
    fds: int  # the server's open file descriptors once warmed up


def open_fds(server: Server) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def http() -> httpx.Client:
    return httpx.Client(timeout=TIMEOUT)


def connections(server: Server) -> float:
    with http() as client:
        response = client.get(f"{server.url}/metrics")
    assert response.status_code == 200
    line = next(x for x in response.text.splitlines() if x.startswith("notifykit_connections "))
    return float(line.split()[1])


def wait_for(condition: Any, what: str, within: float = 10.0) -> None:
    """Poll ``condition()`` (a server signals nothing) until true; fail after ``within`` s."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    server = start_serve("--jwt-secret", SECRET, "--api-key", API_KEY, "--allow-anonymous")
    try:
        # Warm up every path once, so that what a path opens for good is in the baseline.
        with connect(f"{server.ws_url}/ws", subprotocols=[SUBPROTOCOL]) as ws:  # type: ignore[list-item]
            assert isinstance(parse_server(ws.recv(TIMEOUT)), Welcome)
        publish_raw(server, b'{"event": "warm", "broadcast": true}')
        wait_for(lambda: connections(server) == 0, "the warm-up connection to go")
        baseline = open_fds(server)
        yield Target(server, baseline)
        # After every test of the module: still up, nothing leaked, nothing crashed.
        with http() as client:
            assert client.get(f"{server.url}/healthz").status_code == 200
        wait_for(lambda: connections(server) == 0, "every connection to be gone")
        wait_for(lambda: open_fds(server) <= baseline, "the descriptors to be released")
        log = server.stderr()
        assert "Traceback" not in log, log[-5000:]
        assert "Exception in ASGI application" not in log, log[-5000:]
        assert server.process.poll() is None
    finally:
        server.stop()


# --- strategies -------------------------------------------------------------------------------

# Text with any code point a websocket text frame can carry (no lone surrogates: they are not
# UTF-8), and odd ones: combining marks, right-to-left, zero-width, astral, NUL.
odd_text = st.text(
    alphabet=st.characters(exclude_categories=("Cs",))
    | st.sampled_from(
        ["\x00", "\u0301", "\u202e", "\u200b", "\ufeff", "😀", "\U0001d54f", "\uffff"]
    ),
    max_size=40,
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | odd_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(odd_text, children, max_size=4)
    ),
    max_leaves=12,
)
topics = st.sampled_from(["fz:1", "fz:2", "other", "fz:*", "", "a" * 257, "bad topic"]) | odd_text
positions = st.fixed_dictionaries(
    {},
    optional={
        "epoch": st.sampled_from(["ab12", "", "x" * 65, "bad epoch"]) | json_values,
        "offset": st.integers(min_value=-5, max_value=2**64) | json_values,
    },
)
valid_tokens = st.sampled_from(["fz1", "fz2", "fz3"]).map(lambda user: token(user, topics=["fz:*"]))
tokens = (
    valid_tokens
    | st.just(jwt.encode({"sub": "old", "iat": 1, "exp": 2}, SECRET, "HS256"))  # expired
    | st.text(alphabet="abcdefABCDEF0123456789._-", max_size=60)
    | st.integers(8_150, 8_300).map(lambda n: "e" * n)  # around the 8,192-character limit
)


def frame_with(kind: Any, fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, **fields}


field_values = st.dictionaries(
    st.sampled_from(["ref", "topic", "token", "since", "data", "x"]),
    json_values,
    max_size=3,
)
mutated_frames = st.builds(
    frame_with,
    st.sampled_from(
        ["ping", "subscribe", "unsubscribe", "refresh", "welcome", "notification", "PING", ""]
    )
    | json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "ref": st.text(max_size=70) | json_values,
            "topic": topics | json_values,
            "token": tokens | json_values,
            "since": positions | json_values,
        },
    ),
).flatmap(lambda frame: field_values.map(lambda extra: {**frame, **extra}))
plausible_frames = st.one_of(
    st.builds(lambda ref: {"type": "ping", "ref": ref}, st.text(max_size=8)),
    st.builds(
        lambda topic, since: {"type": "subscribe", "topic": topic, "since": since},
        topics,
        positions,
    ),
    st.builds(lambda topic: {"type": "subscribe", "topic": topic}, topics),
    st.builds(lambda topic: {"type": "unsubscribe", "topic": topic}, topics),
    st.builds(lambda tok: {"type": "refresh", "token": tok}, tokens),
)


def ascii_json(frame: Any) -> str:
    return json.dumps(frame)  # lone surrogates travel as \\ud800 escapes


def raw_json(frame: Any) -> str:
    return json.dumps(frame, ensure_ascii=False)


@dataclass(frozen=True)
class Built:
    """A message too large to show in a failing example: made when it is sent."""

    kind: str  # "nested" (a ping with a deep array), "open" (only "[") or "padded" (a ping)
    size: int  # depth, or bytes of UTF-8

    def text(self) -> str:
        if self.kind == "nested":
            return '{"type":"ping","x":' + "[" * self.size + "]" * self.size + "}"
        if self.kind == "open":
            return "[" * self.size
        return '{"type":"ping","pad":"' + "é" * (self.size // 2) + '"}'


messages = st.one_of(
    st.builds(ascii_json, plausible_frames | mutated_frames),
    st.builds(raw_json, plausible_frames | mutated_frames),
    odd_text,
    st.binary(max_size=64),
    st.builds(lambda f: ascii_json(f).encode(), plausible_frames),  # right JSON, binary frame
    st.builds(Built, st.sampled_from(["nested", "open"]), st.integers(1, 3_000)),
    st.builds(
        Built,
        st.just("padded"),
        st.sampled_from([MAX_FRAME_BYTES - 40, MAX_FRAME_BYTES + 1, 4 * MAX_FRAME_BYTES + 1]),
    ),
)
resume_values = st.none() | st.one_of(
    st.dictionaries(
        st.sampled_from(["u:fz1", "u:fz2", "auth", "all", "t:fz:1", "", "x" * 301]) | odd_text,
        positions | json_values,
        max_size=20,
    ).map(ascii_json),
    st.builds(ascii_json, json_values),
    odd_text,
)


@dataclass
class Session:
    tok: str | None
    via: str
    resume: str | None
    messages: list[str | bytes | Built]


sessions = st.builds(
    Session,
    st.none() | valid_tokens | tokens,  # a third with a valid token
    st.sampled_from(["header", "subprotocol", "query"]),
    resume_values,
    st.lists(messages, min_size=0, max_size=8),
)


# --- websocket sessions -----------------------------------------------------------------------


def run_session(server: Server, session: Session) -> None:
    """Play ``session``; assert the server answered it as documented."""
    query: dict[str, str] = {}
    headers: dict[str, str] = {}
    protocols = [SUBPROTOCOL]
    if session.tok is not None:
        if session.via == "header":
            headers["Authorization"] = f"Bearer {session.tok}"
        elif session.via == "subprotocol":
            protocols.append(f"bearer.{session.tok}")
        else:
            query["token"] = session.tok
    if session.resume is not None:
        query["resume"] = session.resume
    url = f"{server.ws_url}/ws"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    status: int | None = None
    ended: ConnectionClosed | None = None
    try:
        with connect(
            url,
            additional_headers=headers,
            subprotocols=protocols,  # type: ignore[arg-type]
            open_timeout=TIMEOUT,
            close_timeout=TIMEOUT,
            compression=None,
            max_size=None,
        ) as ws:
            converse(ws, session.messages)
    except InvalidStatus as refused:  # an HTTP refusal of the handshake
        status = refused.response.status_code
    except ConnectionClosed as closed:
        ended = closed
    assert status is None or status < 500, status
    if ended is not None:
        assert ended.rcvd is not None, f"dropped without a close frame: {ended!r}"
        assert ended.rcvd.code in CLOSE_CODES, ended.rcvd


def converse(ws: ClientConnection, messages: list[str | bytes | Built]) -> None:
    """Expect a welcome, send ``messages`` and a last ping, and read until its pong: every
    frame on the way must be a valid server frame."""
    first = parse_server(ws.recv(TIMEOUT))
    assert isinstance(first, Welcome), first
    for message in messages:
        ws.send(message.text() if isinstance(message, Built) else message)
    ws.send(ascii_json({"type": "ping", "ref": END}))
    while (frame := parse_server(ws.recv(TIMEOUT))) != Pong(END):
        assert getattr(frame, "code", None) in ERROR_CODES | {None}, frame


@fuzz
@given(session=sessions)
def test_websocket_sessions_are_answered_as_documented(target: Target, session: Session) -> None:
    run_session(target.server, session)


# --- POST /publish ----------------------------------------------------------------------------


def publish_raw(server: Server, body: bytes, key: str = API_KEY) -> httpx.Response:
    with http() as client:
        return client.post(
            f"{server.url}/publish",
            content=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )


publish_fields = st.fixed_dictionaries(
    {},
    optional={
        "event": st.sampled_from(["e", "order.shipped", "", "e" * 257]) | json_values,
        "data": json_values,
        "user": st.sampled_from(["fz1", "", "u" * 257]) | json_values,
        "users": st.lists(st.sampled_from(["fz1", "fz2", ""]) | json_values, max_size=4)
        | json_values,
        "topic": topics | json_values,
        "authenticated": st.just(True) | json_values,
        "broadcast": st.just(True) | json_values,
        "exclude": st.text(max_size=70) | json_values,
    },
)
bodies = st.one_of(
    st.builds(lambda obj: ascii_json(obj).encode(), publish_fields),
    st.builds(lambda obj: raw_json(obj).encode(), publish_fields | json_values),
    st.binary(max_size=200),
    st.integers(1, 5_000).map(
        lambda depth: f'{{"event":"e","user":"fz1","data":{"[" * depth}{"]" * depth}}}'.encode()
    ),
    st.sampled_from([60_000, 70_000, 1_100_000]).map(
        lambda size: ascii_json({"event": "big", "broadcast": True, "data": "x" * size}).encode()
    ),
)


@fuzz
@given(body=bodies)
def test_publish_bodies_get_202_400_or_413(target: Target, body: bytes) -> None:
    response = publish_raw(target.server, body)
    assert response.status_code in (202, 400, 413), (response.status_code, response.text)
    answer = response.json()
    if response.status_code == 202:
        assert set(answer) == {"id"}
    else:
        assert set(answer) == {"error", "message"}, answer
