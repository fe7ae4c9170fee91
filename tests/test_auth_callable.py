"""``CallableAuthenticator`` and Starlette's ``ConnectionAuthenticator``: the host app's login
(a function of the request) decides who connects; a presented token goes to the fallback."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import HTTPConnection

from notifykit import AuthenticationError, JWTAuthenticator, Principal, mint_token
from notifykit.adapters.asgi import ConnectionAuthenticator
from notifykit.auth import CallableAuthenticator, as_principal
from notifykit.model import Handshake
from notifykit.protocols import Authenticator, HandshakeAuthenticator

pytestmark = pytest.mark.anyio

SECRET = "callable-auth-tests-secret-0123456789"


def scope(session: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Any:
    """An ASGI websocket scope as Starlette's SessionMiddleware leaves it."""
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    result: dict[str, Any] = {"type": "websocket", "path": "/ws", "headers": raw}
    if session is not None:
        result["session"] = session
    return result


def test_both_implement_the_protocols() -> None:
    auth = CallableAuthenticator(lambda hs: None)
    assert isinstance(auth, HandshakeAuthenticator)
    assert isinstance(auth, Authenticator)  # for refresh frames
    assert auth.cookie_based is True
    assert CallableAuthenticator(lambda hs: None, cookie_based=False).cookie_based is False


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        pytest.param("42", Principal("42"), id="user-id"),
        pytest.param(Principal("7", {"role": "admin"}), Principal("7", {"role": "admin"}), id="p"),
        pytest.param(None, None, id="no-login"),
    ],
)
async def test_what_the_function_returns_becomes_the_principal(
    identity: Any, expected: Principal | None
) -> None:
    sync = CallableAuthenticator(lambda hs: identity)

    async def identify(hs: Handshake) -> Any:
        return identity

    asynchronous = CallableAuthenticator(identify)
    assert await sync.authenticate_handshake(Handshake()) == expected
    assert await asynchronous.authenticate_handshake(Handshake()) == expected


async def test_an_unusable_user_id_is_an_authentication_error_and_a_wrong_type_a_bug() -> None:
    with pytest.raises(AuthenticationError, match="unusable"):
        await CallableAuthenticator(lambda hs: "").authenticate_handshake(Handshake())
    with pytest.raises(TypeError, match="user id, a Principal or None"):
        await CallableAuthenticator(lambda hs: 42).authenticate_handshake(Handshake())  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError):
        as_principal(["42"])  # type: ignore[arg-type]


async def test_a_presented_token_goes_to_the_fallback_and_otherwise_the_login_decides() -> None:
    seen: list[Handshake] = []

    def identify(hs: Handshake) -> str:
        seen.append(hs)
        return "session-user"

    auth = CallableAuthenticator(identify, fallback=JWTAuthenticator(secret=SECRET))
    with_token = Handshake(query={"token": mint_token("token-user", secret=SECRET)})
    assert (await auth.authenticate_handshake(with_token)).user_id == "token-user"  # type: ignore[union-attr]
    assert seen == []
    with pytest.raises(AuthenticationError):
        await auth.authenticate_handshake(Handshake(query={"token": "garbage"}))
    assert (await auth.authenticate_handshake(Handshake())).user_id == "session-user"  # type: ignore[union-attr]
    # Refresh frames are tokens: the fallback verifies them.
    assert (await auth.authenticate(mint_token("token-user", secret=SECRET))).user_id == (
        "token-user"
    )


async def test_without_a_fallback_tokens_are_ignored_at_connect_and_refused_at_refresh() -> None:
    auth = CallableAuthenticator(lambda hs: "session-user")
    assert (await auth.authenticate_handshake(Handshake(query={"token": "x"}))) == Principal(
        "session-user"
    )
    with pytest.raises(AuthenticationError, match="not by token"):
        await auth.authenticate("x")


async def test_the_starlette_function_gets_an_http_connection_on_the_scope() -> None:
    got: list[HTTPConnection] = []

    def current_user(conn: HTTPConnection) -> str | None:
        got.append(conn)
        user: str | None = conn.session.get("user_id")
        return user

    auth = ConnectionAuthenticator(current_user)
    logged_in = Handshake(request=scope({"user_id": "42"}, {"Cookie": "a=b"}))
    assert await auth.authenticate_handshake(logged_in) == Principal("42")
    assert got[0].cookies == {"a": "b"}
    assert await auth.authenticate_handshake(Handshake(request=scope({}))) is None


async def test_an_async_starlette_function_is_awaited() -> None:
    async def current_user(conn: HTTPConnection) -> Principal:
        return Principal(conn.headers["x-user"], {"topics": ["news"]})

    auth = ConnectionAuthenticator(current_user, cookie_based=False)
    principal = await auth.authenticate_handshake(Handshake(request=scope(headers={"X-User": "9"})))
    assert principal == Principal("9", {"topics": ["news"]})


async def test_the_starlette_authenticator_needs_an_asgi_scope() -> None:
    auth = ConnectionAuthenticator(lambda conn: "42")
    with pytest.raises(TypeError, match="ASGI adapter"):
        await auth.authenticate_handshake(Handshake(request=None))
