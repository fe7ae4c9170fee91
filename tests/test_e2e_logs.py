"""The logs of a real ``notifykit serve`` at debug level name connections and users, and never
hold a token or an API key — wherever the token came from (header, ``bearer.`` subprotocol,
``?token=``, an in-band refresh), whether it was accepted or refused.

Everything the server prints, on stdout and stderr, from start to exit, is searched.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import jwt
import pytest
from servers_e2e import (
    API_KEY,
    FRAME_TIMEOUT,
    OTHER_SECRET,
    SECRET,
    Server,
    client,
    closed,
    notification,
    publish,
    recv,
    send,
    start_serve,
    token,
    welcome,
)

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

WRONG_API_KEY = "wrong-api-key-9f8e7d6c5b4a39281706"


@dataclass
class Secrets:
    """Every secret a run hands the server; none may be logged."""

    values: list[str] = field(default_factory=lambda: [API_KEY, WRONG_API_KEY, SECRET])

    def token(self, user: str, **options: object) -> str:
        signed = token(user, **options)  # type: ignore[arg-type]
        self.values.append(signed)
        return signed

    def add(self, signed: str) -> str:
        self.values.append(signed)
        return signed

    def fragments(self) -> list[str]:
        """Each secret, and a JWT's claims and signature on their own (a log that cut a token
        short, or split it, still leaks those)."""
        found = []
        for value in self.values:
            found.append(value)
            if value.count(".") == 2:
                _, claims, signature = value.split(".")
                found += [claims, signature]
        return found


def expired(user: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now - 120, "exp": now - 60}, SECRET, "HS256")


@pytest.fixture(params=["text", "json"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    srv = start_serve(
        "--jwt-secret",
        SECRET,
        "--api-key",
        API_KEY,
        "--log-level",
        "debug",
        "--log-format",
        request.param,
    )
    yield srv
    srv.stop()


def output_until_exit(server: Server) -> str:
    """Stop the server (SIGTERM, its shutdown logged too) and return all it printed."""
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(15)
    return server.stdout() + server.stderr()


async def exercise(server: Server, secrets: Secrets) -> list[tuple[str, str]]:
    """Publish, connect by each token source, refresh, and be refused in each way; return the
    ``(connection id, user)`` of each accepted connection."""
    accepted = []
    async with (
        client(server, secrets.token("alice"), via="header") as by_header,
        client(server, secrets.token("bob"), via="subprotocol") as by_subprotocol,
        client(server, secrets.token("carol"), via="query") as by_query,
    ):
        for ws, user in ((by_header, "alice"), (by_subprotocol, "bob"), (by_query, "carol")):
            accepted.append(((await welcome(ws))["connection_id"], user))
            await publish(server, {"event": "hello", "user": user})
            assert (await notification(ws))["event"] == "hello"
        # In-band refreshes: one accepted, one refused for a bad token, one for another user.
        await send(by_header, {"type": "refresh", "token": secrets.token("alice"), "ref": "r1"})
        assert (await recv(by_header))["type"] == "refreshed"
        await send(by_header, {"type": "refresh", "token": secrets.add(expired("alice"))})
        assert (await recv(by_header))["type"] == "error"
        await send(by_query, {"type": "refresh", "token": secrets.token("mallory")})
        assert (await recv(by_query))["type"] == "error"
    # Refused handshakes, by each source: expired, signed with another key, not a JWT.
    bad = [
        secrets.add(expired("dave")),
        secrets.token("erin", secret=OTHER_SECRET),
        secrets.add("not-a-jwt-but-secret-all-the-same-0123456789"),
    ]
    for signed in bad:
        for via in ("header", "subprotocol", "query"):
            async with client(server, signed, via=via) as refused:
                assert (await closed(refused))[0] == 4001
    # The HTTP API, with the right key and a wrong one.
    await publish(server, {"event": "to-nobody", "user": "nobody"})
    async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
        response = await http.post(
            f"{server.url}/publish",
            json={"event": "e", "user": "alice"},
            headers={"Authorization": f"Bearer {WRONG_API_KEY}"},
        )
        assert response.status_code == 401
        response = await http.get(
            f"{server.url}/presence/alice", headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert response.status_code == 200
    return accepted


async def test_debug_logs_name_connections_and_users_and_hold_no_token_or_key(
    server: Server,
) -> None:
    secrets = Secrets()
    accepted = await exercise(server, secrets)
    logs = output_until_exit(server)

    leaked = [secret for secret in secrets.fragments() if secret in logs]
    assert not leaked, f"{len(leaked)} secret(s) in the logs:\n{logs}"
    # The logs are there, at debug level, and say who: every connection by id, with its user.
    assert "DEBUG" in logs
    for connection_id, user in accepted:
        lines = [line for line in logs.splitlines() if connection_id in line]
        assert any(f"user {user!r}" in line for line in lines), (connection_id, logs)


async def test_json_logs_are_one_object_per_line_with_the_connection_s_fields() -> None:
    server = start_serve(
        "--jwt-secret", SECRET, "--api-key", API_KEY, "--log-level", "debug", "--log-format", "json"
    )
    try:
        accepted = await exercise(server, Secrets())
        logs = output_until_exit(server)
    finally:
        server.stop()
    entries = [json.loads(line) for line in logs.splitlines()]  # every line is one object
    assert {"uvicorn.access", "uvicorn.error", "notifykit.gateway"} <= {
        e["logger"] for e in entries
    }
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
    for connection_id, user in accepted:
        about = [e for e in entries if e.get("connection_id") == connection_id]
        assert {e["user_id"] for e in about} == {user}
        closing = [e for e in about if "close_code" in e]
        assert [e["close_code"] for e in closing] == [None]  # each client closed by itself
    refusals = [e for e in entries if e["message"].startswith("refused a connection")]
    assert len(refusals) == 9
    assert {e["close_code"] for e in refusals} == {4001}
    access = [e for e in entries if e["logger"] == "uvicorn.access"]
    assert {(e["method"], e["path"], e["status"]) for e in access} >= {
        ("POST", "/publish", 202),
        ("POST", "/publish", 401),
    }
