"""Authenticating websocket clients with the host application's own login, not only tokens.

A browser logged in to your app already sends its session cookie with the websocket handshake;
:class:`CallableAuthenticator` turns a function of the handshake into a
:class:`~notifykit.protocols.HandshakeAuthenticator`::

    def identify(handshake: Handshake) -> str | None:
        return sessions.user_of(handshake.headers.get("cookie", ""))   # your app's lookup

    authenticator = CallableAuthenticator(identify, fallback=JWTAuthenticator(secret=SECRET))

The function returns a user id, a :class:`~notifykit.model.Principal` (to set claims or an
expiry), or None when the request carries no login; it may be async, and raises
:class:`~notifykit.errors.AuthenticationError` to refuse a client with a reason. A client that
presents a token is verified by ``fallback`` instead (mobile apps and services keep using
JWTs), which also serves in-band ``refresh`` frames.

The adapters build on it with their framework's view of the request:
``notifykit.adapters.asgi.ConnectionAuthenticator`` (a Starlette ``HTTPConnection``: session,
cookies, ``request.user``) and ``notifykit.adapters.channels.ChannelsUserAuthenticator`` (the
Django user Channels' ``AuthMiddlewareStack`` resolved). This module imports no web framework.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, TypeAlias

from .errors import AuthenticationError, InvalidNotification
from .model import Handshake, Principal, validate_user_id

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .protocols import Authenticator

__all__ = ["CallableAuthenticator", "Identity", "as_principal"]

Identity: TypeAlias = str | Principal | None
"""Who a request proves: a user id, a full principal, or None for no login."""


def as_principal(identity: Identity) -> Principal | None:
    """The principal ``identity`` names (a user id becomes a principal without claims or
    expiry). Raises :class:`~notifykit.errors.AuthenticationError` for an unusable user id
    and ``TypeError`` for anything that is not an :data:`Identity` (a bug in the caller)."""
    if identity is None or isinstance(identity, Principal):
        return identity
    if isinstance(identity, str):
        try:
            return Principal(validate_user_id(identity))
        except InvalidNotification as exc:
            raise AuthenticationError(f"the login's user id is unusable: {exc}") from None
    raise TypeError(
        f"an identify function must return a user id, a Principal or None, not {identity!r}"
    )


class CallableAuthenticator:
    """A :class:`~notifykit.protocols.HandshakeAuthenticator` from a function of the handshake
    (see the module docstring).

    ``cookie_based`` (default True) says the function trusts credentials the browser sends by
    itself; the gateway then requires ``allowed_origins``. Pass False for credentials a page
    cannot make a browser send (a custom header, a client certificate).
    """

    def __init__(
        self,
        identify: Callable[[Handshake], Identity | Awaitable[Identity]],
        *,
        fallback: Authenticator | None = None,
        cookie_based: bool = True,
    ) -> None:
        if not callable(identify):
            raise TypeError("identify must be a function of the handshake")
        self.identify = identify
        self.fallback = fallback
        self.cookie_based = cookie_based

    async def authenticate_handshake(self, handshake: Handshake) -> Principal | None:
        """The token's principal if the client presented a token and there is a ``fallback``;
        else whom ``identify`` names (None: no login)."""
        if self.fallback is not None:
            token = handshake.bearer_token()
            if token is not None:
                return await self.fallback.authenticate(token)
        identity = self.identify(handshake)
        if inspect.isawaitable(identity):
            identity = await identity
        return as_principal(identity)

    async def authenticate(self, token: str) -> Principal:
        """Verify a token (an in-band ``refresh``) with ``fallback``; without one, tokens are
        refused."""
        if self.fallback is None:
            raise AuthenticationError("this server authenticates by login, not by token")
        return await self.fallback.authenticate(token)
