"""End to end: the JWT attack matrix against ``notifykit serve``.

Every refused token is accepted at the websocket handshake only to be closed at once with 4001
and a reason a browser can read, before any frame: no ``welcome``, nothing registered.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from servers_e2e import (
    API_KEY,
    OTHER_SECRET,
    SECRET,
    SUBPROTOCOL,
    Server,
    client,
    closed,
    log_on_failure,
    start_serve,
    wait_for_health,
    welcome,
)

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

AUDIENCE = "notifykit-e2e"
ISSUER = "https://auth.example"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = start_serve(
        "--jwt-secret",
        SECRET,
        "--jwt-audience",
        AUDIENCE,
        "--jwt-issuer",
        ISSUER,
        "--api-key",
        API_KEY,
    )
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _server_log(request: pytest.FixtureRequest, server: Server) -> Iterator[None]:
    with log_on_failure(request, server):
        yield


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for user "42", with ``overrides`` (a value of None removes the claim)."""
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "42",
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def signed(payload: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=algorithm)


def unsigned(payload: dict[str, Any]) -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(payload).encode())}."


def tampered(token: str) -> str:
    """``token`` with its payload swapped for one naming another user, signature kept."""
    header, _payload, signature = token.split(".")
    return f"{header}.{b64(json.dumps(claims(sub='1')).encode())}.{signature}"


def rsa_signed(payload: dict[str, Any]) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(payload, key, algorithm="RS256")


# Each: how to make the token, and what the close reason must say.
ATTACKS: dict[str, tuple[Callable[[], str], str]] = {
    "expired": (lambda: signed(claims(exp=int(time.time()) - 60)), "expired"),
    "nbf-in-the-future": (lambda: signed(claims(nbf=int(time.time()) + 3600)), "nbf"),
    "wrong-key": (lambda: signed(claims(), key=OTHER_SECRET), "signature"),
    "wrong-algorithm-hs512": (lambda: signed(claims(), SECRET * 2, "HS512"), "algorithm"),
    "wrong-algorithm-rs256": (lambda: rsa_signed(claims()), "algorithm"),
    "alg-none": (lambda: unsigned(claims()), "algorithm"),
    "missing-exp": (lambda: signed(claims(exp=None)), "exp"),
    "wrong-aud": (lambda: signed(claims(aud="someone-else")), "audience"),
    "missing-aud": (lambda: signed(claims(aud=None)), "aud"),
    "wrong-iss": (lambda: signed(claims(iss="https://evil.example")), "issuer"),
    "missing-user-claim": (lambda: signed(claims(sub=None)), "sub"),
    "garbage": (lambda: "garbage", "not a valid JWT"),
    "garbage-three-parts": (lambda: "aaa.bbb.ccc", "not a valid JWT"),
    "tampered-payload": (lambda: tampered(signed(claims())), "signature"),
    "empty": (lambda: "", "no token"),
}


@pytest.mark.parametrize("via", ["header", "subprotocol", "query"])
@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_a_bad_token_is_closed_with_4001_and_a_clear_reason_before_any_frame(
    server: Server, attack: str, via: str
) -> None:
    make, says = ATTACKS[attack]
    bad = make()
    async with client(server, bad, via=via) as ws:
        assert ws.subprotocol == SUBPROTOCOL
        code, reason, frames = await closed(ws)
    assert code == 4001
    assert says in reason
    assert frames == []  # no welcome, no notification
    if len(bad) > 10:
        assert bad not in reason
        assert SECRET not in reason


async def test_no_token_at_all_is_closed_with_4001(server: Server) -> None:
    async with client(server) as ws:
        code, reason, frames = await closed(ws)
    assert (code, frames) == (4001, [])
    assert reason.startswith("no token")


@pytest.mark.parametrize("via", ["header", "subprotocol", "query"])
async def test_a_valid_token_with_the_right_audience_and_issuer_is_welcomed(
    server: Server, via: str
) -> None:
    async with client(server, signed(claims()), via=via) as ws:
        frame = await welcome(ws)
    assert frame["user"] == "42"


async def test_refused_clients_leave_nothing_registered(server: Server) -> None:
    for attack in ATTACKS.values():
        async with client(server, attack[0]()) as ws:
            await closed(ws)
    body = await wait_for_health(server, lambda h: h["connections"] == 0)
    assert body["users"] == 0


# --- public keys ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_server(
    rsa_key: rsa.RSAPrivateKey, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_file: Path = tmp_path_factory.mktemp("keys") / "public.pem"
    key_file.write_bytes(pem)
    srv = start_serve("--jwt-public-key-file", str(key_file), "--api-key", API_KEY)
    yield srv
    srv.stop()


async def test_a_public_key_server_accepts_rs256_tokens_signed_by_the_private_key(
    rsa_server: Server, rsa_key: rsa.RSAPrivateKey
) -> None:
    now = int(time.time())
    tok = jwt.encode({"sub": "7", "exp": now + 600}, rsa_key, algorithm="RS256")
    async with client(rsa_server, tok) as ws:
        assert (await welcome(ws))["user"] == "7"


async def test_a_public_key_server_refuses_a_token_hmac_signed_with_the_public_key(
    rsa_server: Server, rsa_key: rsa.RSAPrivateKey
) -> None:
    """The algorithm-confusion attack: the public key is public, so it must not be usable as
    an HMAC secret."""
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps({"sub": "7", "exp": int(time.time()) + 600}).encode())
    signature = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    async with client(rsa_server, f"{header}.{payload}.{b64(signature)}") as ws:
        code, reason, frames = await closed(ws)
    assert (code, frames) == (4001, [])
    assert "algorithm" in reason
