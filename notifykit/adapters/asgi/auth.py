"""Log websocket clients in with the host app's own login (Starlette, FastAPI), not a JWT.

::

    from starlette.requests import HTTPConnection

    def current_user(conn: HTTPConnection) -> str | None:
        return conn.session.get("user_id")       # what your login view stored

    app.add_middleware(SessionMiddleware, secret_key=...)      # sessions reach websockets too
    app.mount("/notify", NotifyApp(hub, ConnectionAuthenticator(current_user),
                                   allowed_origins=["https://app.example.com"]))

The function gets a Starlette ``HTTPConnection`` for the websocket's scope — ``conn.session``
(``SessionMiddleware``), ``conn.cookies``, ``conn.user`` (``AuthenticationMiddleware``),
``conn.headers`` — the same object a FastAPI dependency declared on ``HTTPConnection`` receives,
so one function can serve both. It returns a user id, a :class:`~notifykit.model.Principal`
or None (not logged in), may be async (do database lookups in an async function: a sync one
runs on the event loop), and raises :class:`~notifykit.errors.AuthenticationError` to refuse
with a reason. See :mod:`notifykit.auth` for ``fallback`` (tokens) and ``cookie_based``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from ...auth import CallableAuthenticator, Identity

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ...model import Handshake
    from ...protocols import Authenticator

__all__ = ["ConnectionAuthenticator"]


class ConnectionAuthenticator(CallableAuthenticator):
    """A :class:`~notifykit.auth.CallableAuthenticator` whose function receives the
    websocket's Starlette ``HTTPConnection`` (see the module docstring)."""

    def __init__(
        self,
        identify: Callable[[HTTPConnection], Identity | Awaitable[Identity]],
        *,
        fallback: Authenticator | None = None,
        cookie_based: bool = True,
    ) -> None:
        if not callable(identify):
            raise TypeError("identify must be a function of a Starlette HTTPConnection")
        self.identify_connection = identify
        super().__init__(self._identify, fallback=fallback, cookie_based=cookie_based)

    def _identify(self, handshake: Handshake) -> Identity | Awaitable[Identity]:
        scope = handshake.request
        if not isinstance(scope, Mapping) or scope.get("type") != "websocket":
            raise TypeError("ConnectionAuthenticator needs an ASGI adapter (the scope)")
        return self.identify_connection(HTTPConnection(scope))  # type: ignore[arg-type]
