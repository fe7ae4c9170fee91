"""Log lines: the gateway's name connections and users as fields; ``notifykit serve``'s filter
takes every token and API key out of any line; its JSON formatter writes one object per line.

(tests/test_e2e_logs.py checks the whole output of real servers.)
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import pytest
from test_gateway import SECRET, connect, handshake, request, token, welcome

from notifykit import CloseCode, Hub, JWTAuthenticator
from notifykit.cli.logs import REDACTED, JSONFormatter, RedactTokens, logging_config, redact
from notifykit.gateway import Gateway
from notifykit.wire import Error, Refreshed

JWT = token("42")
_, CLAIMS, SIGNATURE = JWT.split(".")
API_KEY = "live-key-4f3e2d1c0b9a8877"

# --- redaction ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(
            f"GET /ws?token={JWT}&resume=x HTTP/1.1",
            f"GET /ws?token={REDACTED}&resume=x HTTP/1.1",
            id="query",
        ),
        pytest.param(
            f"< authorization: Bearer {JWT}", f"< authorization: Bearer {REDACTED}", id="jwt-header"
        ),
        pytest.param(
            f"Authorization: bearer {API_KEY}", f"Authorization: bearer {REDACTED}", id="api-key"
        ),
        pytest.param(
            f"< sec-websocket-protocol: notifykit.v1, bearer.{JWT}, other",
            f"< sec-websocket-protocol: notifykit.v1, bearer.{REDACTED}, other",
            id="subprotocol",
        ),
        pytest.param(
            f'< TEXT \'{{"type": "refresh", "token": "{JWT[:20]}...{JWT[-8:]}", "ref": "r1"}}\'',
            f'< TEXT \'{{"type": "refresh", "token": "{REDACTED}", "ref": "r1"}}\'',
            id="refresh-frame-cut-short",
        ),
        pytest.param(
            f'{{"type":"refresh","token":"{JWT}"}}',
            f'{{"type":"refresh","token":"{REDACTED}"}}',
            id="refresh-frame-compact",
        ),
        pytest.param(f"bad token {JWT}!", f"bad token {REDACTED}!", id="a-jwt-anywhere"),
        pytest.param(
            f"cut: {JWT.rpartition('.')[0]}", f"cut: {REDACTED}", id="a-jwt-without-signature"
        ),
    ],
)
def test_every_way_a_secret_reaches_a_line_is_redacted(line: str, expected: str) -> None:
    assert redact(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        '127.0.0.1:5000 - "POST /publish HTTP/1.1" 202 Accepted',
        "no token: send 'Authorization: Bearer <jwt>', a 'bearer.<jwt>' subprotocol or a 'token' "
        "query parameter",
        "connection x of user 'bearer' closed by the client",
        "refused a connection from 127.0.0.1:3: 4001 token signature is invalid",
    ],
)
def test_lines_without_secrets_are_left_as_they_are(line: str) -> None:
    assert redact(line) == line


class Frame:
    """An object logged as an argument (as websockets logs its frames)."""

    def __str__(self) -> str:
        return f'TEXT \'{{"type":"refresh","token":"{JWT}"}}\''


def record(msg: str, *args: Any, **extra: Any) -> logging.LogRecord:
    entry = logging.LogRecord("notifykit.gateway", logging.INFO, __file__, 1, msg, args, None)
    entry.__dict__.update(extra)
    return entry


def formatted(entry: logging.LogRecord, formatter: logging.Formatter | None = None) -> str:
    assert RedactTokens().filter(entry) is True  # never drops a line
    return (formatter or logging.Formatter("%(message)s")).format(entry)


def test_the_filter_redacts_the_message_its_arguments_of_any_type_and_keeps_numbers() -> None:
    line = formatted(
        record("< %s from %s: %d bytes, key %s", Frame(), "ws", 7, f"Bearer {API_KEY}")
    )
    frame = f'TEXT \'{{"type":"refresh","token":"{REDACTED}"}}\''
    assert line == f"< {frame} from ws: 7 bytes, key Bearer {REDACTED}"


def test_the_filter_redacts_a_traceback() -> None:
    try:
        raise ValueError(f"could not parse Authorization: Bearer {API_KEY} ({JWT})")
    except ValueError:
        entry = record("request failed")
        entry.exc_info = sys.exc_info()
    line = formatted(entry)
    assert "ValueError: could not parse" in line
    assert API_KEY not in line
    assert SIGNATURE not in line


# --- JSON lines --------------------------------------------------------------------------------


def test_a_json_line_holds_the_message_and_every_extra_field() -> None:
    entry = record(
        "connection %s of user %r closed %s",
        "c1",
        "42",
        f"with 4001 'token expired' ({JWT})",
        connection_id="c1",
        user_id="42",
        close_code=4001,
        reason=None,
    )
    line = formatted(entry, JSONFormatter())
    assert "\n" not in line
    fields = json.loads(line)
    assert fields.pop("time").endswith("Z")
    assert fields == {
        "level": "INFO",
        "logger": "notifykit.gateway",
        "message": f"connection c1 of user '42' closed with 4001 'token expired' ({REDACTED})",
        "connection_id": "c1",
        "user_id": "42",
        "close_code": 4001,
        "reason": None,
    }


def test_a_json_access_line_has_its_request_as_fields() -> None:
    entry = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/healthz?token={JWT}", "1.1", 200),
        None,
    )
    fields = json.loads(formatted(entry, JSONFormatter()))
    assert fields["message"] == f'127.0.0.1:5000 - "GET /healthz?token={REDACTED} HTTP/1.1" 200'
    assert (fields["method"], fields["path"], fields["status"]) == (
        "GET",
        f"/healthz?token={REDACTED}",
        200,
    )


def test_a_json_line_carries_the_exception() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        entry = record("failed")
        entry.exc_info = sys.exc_info()
    fields = json.loads(formatted(entry, JSONFormatter()))
    assert fields["exception"].endswith("RuntimeError: boom")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_every_handler_of_the_serve_configuration_redacts(log_format: str) -> None:
    config = logging_config("debug", log_format)
    assert config["root"] == {"handlers": ["notifykit"], "level": "WARNING"}
    for handler in config["handlers"].values():
        assert handler["filters"] == ["redact_tokens"]
        if log_format == "json":
            assert handler["formatter"] == "json"
    assert logging_config("error")["root"]["level"] == "ERROR"


# --- the gateway's lines -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_connection_s_lines_name_it_and_its_user_as_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="notifykit.gateway")
    async with Hub() as hub:
        gateway = Gateway(hub, JWTAuthenticator(secret=SECRET))
        signed = token("42")
        async with connect(gateway, handshake(signed)) as client:
            connection_id = (await welcome(client)).connection_id
            assert isinstance(await request(client, type="refresh", token=token("42")), Refreshed)
            assert isinstance(await request(client, type="refresh", token="nope"), Error)
        async with connect(gateway, handshake("not-a-jwt")) as refused:
            assert (await refused.closed())[0] == CloseCode.UNAUTHORIZED

    lines = {(r.levelname, r.getMessage().split(connection_id)[-1]): r for r in caplog.records}
    opened = lines["DEBUG", " of user '42' opened from an unknown address"]
    refreshed = next(r for (level, text), r in lines.items() if "refreshed its token" in text)
    refused_refresh = lines["INFO", " of user '42': refresh refused: token is not a valid JWT"]
    closed = lines["DEBUG", " of user '42' closed by the client"]
    for entry in (opened, refreshed, refused_refresh, closed):
        assert (entry.connection_id, entry.user_id) == (connection_id, "42")  # type: ignore[attr-defined]
    assert closed.close_code is None  # type: ignore[attr-defined]
    refusal = lines[
        "INFO", "refused a connection from an unknown address: 4001 token is not a valid JWT"
    ]
    assert refusal.close_code == CloseCode.UNAUTHORIZED  # type: ignore[attr-defined]
    assert all(signed not in r.getMessage() for r in caplog.records)
