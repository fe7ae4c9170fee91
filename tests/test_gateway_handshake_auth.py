"""The gateway with a :class:`~notifykit.protocols.HandshakeAuthenticator`: users who log in to
the host app (a session, a cookie) instead of holding a token.

Driven through the in-memory websocket of tests/memory_transport.py, like tests/test_gateway.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from memory_transport import MemoryClient, memory_websocket

from notifykit import (
    SUBPROTOCOL,
    AuthenticationError,
    CloseCode,
    ConfigurationError,
    Hub,
    JWTAuthenticator,
    Principal,
    mint_token,
)
from notifykit.gateway import Gateway
from notifykit.model import Handshake
from notifykit.protocols import HandshakeAuthenticator
from notifykit.wire import Error, Refreshed, Welcome

pytestmark = pytest.mark.anyio

SECRET = "handshake-auth-tests-secret-0123456789"
ORIGIN = "https://app.example"


class SessionAuth:
    """Reads a user from a ``session`` cookie (``session=<user>``; ``session=bad`` is refused),
    and, if given a fallback, tokens from it."""

    cookie_based = True

    def __init__(self, fallback: JWTAuthenticator | None = None) -> None:
        self.fallback = fallback
        self.seen: list[Handshake] = []

    async def authenticate_handshake(self, handshake: Handshake) -> Principal | None:
        self.seen.append(handshake)
        cookie = handshake.headers.get("cookie", "")
        name, _, value = cookie.partition("=")
        if name == "session" and value == "bad":
            raise AuthenticationError("session expired: log in again")
        if name == "session" and value:
            return Principal(value)
        token = handshake.bearer_token()
        if token is not None and self.fallback is not None:
            return await self.fallback.authenticate(token)
        return None

    async def authenticate(self, token: str) -> Principal:
        if self.fallback is None:
            raise AuthenticationError("tokens are not accepted here")
        return await self.fallback.authenticate(token)


class HandshakeOnly:
    """A handshake authenticator without ``authenticate(token)`` and without cookies."""

    cookie_based = False

    async def authenticate_handshake(self, handshake: Handshake) -> Principal | None:
        user = handshake.headers.get("x-user")
        return Principal(user) if user else None


def handshake(*, cookie: str | None = None, token: str | None = None) -> Handshake:
    headers = {"origin": ORIGIN}
    if cookie is not None:
        headers["cookie"] = cookie
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return Handshake(headers=headers, subprotocols=(SUBPROTOCOL,), request={"marker": 1})


@asynccontextmanager
async def connect(gateway: Gateway, hs: Handshake) -> AsyncIterator[MemoryClient]:
    client, transport = memory_websocket()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(gateway.serve, transport, hs)
        try:
            yield client
        finally:
            client.disconnect()


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    async with Hub() as running:
        yield running


def test_the_test_authenticators_implement_the_protocol() -> None:
    assert isinstance(SessionAuth(), HandshakeAuthenticator)
    assert isinstance(HandshakeOnly(), HandshakeAuthenticator)


async def test_a_session_user_is_welcomed_without_a_token(hub: Hub) -> None:
    auth = SessionAuth()
    gateway = Gateway(hub, auth, allowed_origins=[ORIGIN])
    async with connect(gateway, handshake(cookie="session=ada")) as client:
        frame = await client.recv()
        assert isinstance(frame, Welcome)
        assert (frame.user, frame.expires_at) == ("ada", None)
        sent = await hub.notify_user("ada", "hello")
        assert (await client.recv()).id == sent  # type: ignore[union-attr]
    # The authenticator saw the framework's request object.
    assert auth.seen[0].request == {"marker": 1}


async def test_no_credentials_close_with_4001_unless_anonymous_clients_are_allowed(
    hub: Hub,
) -> None:
    strict = Gateway(hub, SessionAuth(), allowed_origins=[ORIGIN])
    async with connect(strict, handshake()) as client:
        assert await client.closed() == (CloseCode.UNAUTHORIZED, "not authenticated: log in first")
    lenient = Gateway(hub, SessionAuth(), allowed_origins=[ORIGIN], allow_anonymous=True)
    async with connect(lenient, handshake()) as client:
        frame = await client.recv()
        assert isinstance(frame, Welcome)
        assert frame.user is None


async def test_credentials_the_authenticator_refuses_close_with_4001_and_its_reason(
    hub: Hub,
) -> None:
    gateway = Gateway(hub, SessionAuth(), allowed_origins=[ORIGIN], allow_anonymous=True)
    async with connect(gateway, handshake(cookie="session=bad")) as client:
        assert await client.closed() == (CloseCode.UNAUTHORIZED, "session expired: log in again")
    assert hub.state.connection_count == 0


async def test_a_token_still_works_through_the_fallback_and_can_be_refreshed(hub: Hub) -> None:
    gateway = Gateway(hub, SessionAuth(JWTAuthenticator(secret=SECRET)), allowed_origins=[ORIGIN])
    first = mint_token("bob", secret=SECRET, ttl=60)
    async with connect(gateway, handshake(token=first)) as client:
        assert (await client.recv()).user == "bob"  # type: ignore[union-attr]
        await client.send_json({"type": "refresh", "token": mint_token("bob", secret=SECRET)})
        assert isinstance(await client.recv(), Refreshed)


async def test_a_session_connection_cannot_refresh_where_tokens_are_not_accepted(
    hub: Hub,
) -> None:
    gateway = Gateway(hub, SessionAuth(), allowed_origins=[ORIGIN])
    async with connect(gateway, handshake(cookie="session=cy")) as client:
        await client.recv()
        await client.send_json({"type": "refresh", "token": "whatever", "ref": "r"})
        frame = await client.recv()
        assert isinstance(frame, Error)
        assert (frame.code, frame.ref) == ("forbidden", "r")
        assert "tokens are not accepted here" in frame.message


async def test_an_authenticator_without_authenticate_refuses_refresh(hub: Hub) -> None:
    gateway = Gateway(hub, HandshakeOnly())
    hs = Handshake(headers={"x-user": "dee"}, subprotocols=(SUBPROTOCOL,))
    async with connect(gateway, hs) as client:
        await client.recv()
        await client.send_json({"type": "refresh", "token": "t"})
        frame = await client.recv()
        assert isinstance(frame, Error)
        assert frame.message == "this server does not accept tokens"


async def test_a_cookie_based_authenticator_requires_allowed_origins(hub: Hub) -> None:
    with pytest.raises(ConfigurationError, match="allowed_origins"):
        Gateway(hub, SessionAuth())
    Gateway(hub, HandshakeOnly())  # not cookie-based: no origin list needed


async def test_the_origin_is_checked_before_the_session_is_read(hub: Hub) -> None:
    auth = SessionAuth()
    gateway = Gateway(hub, auth, allowed_origins=[ORIGIN])
    hs = Handshake(
        headers={"origin": "https://evil.example", "cookie": "session=ada"},
        subprotocols=(SUBPROTOCOL,),
    )
    async with connect(gateway, hs) as client:
        assert (await client.closed())[0] == CloseCode.FORBIDDEN
    assert auth.seen == []


def test_an_object_with_neither_method_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="authenticate"):
        Gateway(Hub(), object())  # type: ignore[arg-type]
