"""The Django Channels adapter in process: the Django user authenticator and what the consumer
takes from Channels' middleware (end to end it runs in tests/test_adapter_contract.py and
tests/test_examples.py)."""

from __future__ import annotations

import datetime
from typing import Any

import django
import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(
        SECRET_KEY="channels-adapter-tests-" + "0" * 40,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        USE_TZ=True,
    )
    django.setup()

from channels.auth import AuthMiddlewareStack
from django.contrib.auth.models import AnonymousUser

from notifykit import AuthenticationError, JWTAuthenticator, Principal, mint_token
from notifykit.adapters.channels import (
    ChannelsUserAuthenticator,
    _unwrapped,
)
from notifykit.model import Handshake
from notifykit.protocols import HandshakeAuthenticator

# The websockets library and Django Channels run on asyncio only.
pytestmark = [pytest.mark.anyio, pytest.mark.asyncio_only]

SECRET = "channels-adapter-tests-secret-0123456789"
EXPIRY = datetime.datetime(2031, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


class User:
    """What the authenticator reads from a Django user."""

    is_authenticated = True

    def __init__(self, pk: int, username: str, is_staff: bool = False) -> None:
        self.pk = pk
        self.username = username
        self.is_staff = is_staff


class Session:
    def get_expiry_date(self) -> datetime.datetime:
        return EXPIRY


def handshake(user: Any = None, *, session: Any = None, token: str | None = None) -> Handshake:
    scope: dict[str, Any] = {"type": "websocket"}
    if user is not None:
        scope["user"] = user
    if session is not None:
        scope["session"] = session
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return Handshake(headers=headers, request=scope)


def test_it_is_a_cookie_based_handshake_authenticator() -> None:
    auth = ChannelsUserAuthenticator()
    assert isinstance(auth, HandshakeAuthenticator)
    assert auth.cookie_based


async def test_a_logged_in_user_is_the_principal_until_the_session_expires() -> None:
    principal = await ChannelsUserAuthenticator().authenticate_handshake(
        handshake(User(7, "ada"), session=Session())
    )
    assert principal == Principal("7", {}, EXPIRY.timestamp())


async def test_user_id_claims_and_session_expiry_are_configurable() -> None:
    auth = ChannelsUserAuthenticator(
        user_id=lambda user: user.username,
        claims=lambda user: {"topics": ["staff:*"] if user.is_staff else []},
        session_expiry=False,
    )
    principal = await auth.authenticate_handshake(
        handshake(User(7, "ada", is_staff=True), session=Session())
    )
    assert principal == Principal("ada", {"topics": ["staff:*"]}, None)


async def test_an_anonymous_user_is_no_login() -> None:
    auth = ChannelsUserAuthenticator()
    assert await auth.authenticate_handshake(handshake(AnonymousUser())) is None


async def test_without_auth_middleware_the_client_is_told_the_server_cannot_read_logins() -> None:
    with pytest.raises(AuthenticationError, match="AuthMiddlewareStack"):
        await ChannelsUserAuthenticator().authenticate_handshake(handshake())


async def test_a_token_is_verified_by_the_fallback_before_the_session_is_read() -> None:
    auth = ChannelsUserAuthenticator(fallback=JWTAuthenticator(secret=SECRET))
    principal = await auth.authenticate_handshake(
        handshake(User(7, "ada"), token=mint_token("bob", secret=SECRET))
    )
    assert principal is not None
    assert principal.user_id == "bob"
    with pytest.raises(AuthenticationError):
        await auth.authenticate_handshake(handshake(User(7, "ada"), token="garbage"))


async def test_the_consumer_sends_past_the_session_middleware_to_the_server() -> None:
    """Channels' SessionMiddleware wraps send to save sessions on HTTP responses; for websocket
    frames it only forwards them, and it hides the server's transport from abort()."""
    seen: list[Any] = []

    async def server_send(message: Any) -> None:
        seen.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        unwrapped = _unwrapped(send)
        assert unwrapped is server_send
        assert send is not server_send  # the middleware did wrap it
        await unwrapped({"type": "websocket.send", "text": "x"})

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    stack = AuthMiddlewareStack(app)
    await stack({"type": "websocket", "headers": [], "path": "/ws"}, receive, server_send)
    assert seen == [{"type": "websocket.send", "text": "x"}]
