"""The Django Channels adapter: notifykit's websocket in a Channels ``URLRouter``.

::

    # asgi.py of your Django project
    django_asgi_app = get_asgi_application()

    from channels.auth import AuthMiddlewareStack
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.urls import path
    from notifykit.adapters.channels import ChannelsUserAuthenticator, HubLifespan, NotifyConsumer

    from .notify import hub          # Hub(RedisPropagator(settings.NOTIFYKIT_REDIS_URL))

    application = ProtocolTypeRouter({
        "http": django_asgi_app,
        "websocket": AuthMiddlewareStack(URLRouter([
            path("ws/notify/", NotifyConsumer(
                hub, ChannelsUserAuthenticator(), allowed_origins=["https://shop.example"])),
        ])),
        "lifespan": HubLifespan(hub),   # starts and stops the hub with the server
    })

* :class:`NotifyConsumer` — an ASGI app (no ``.as_asgi()``): the gateway behind Channels'
  routing and middleware, with no channel layer involved.
* :class:`ChannelsUserAuthenticator` — the Django user ``AuthMiddlewareStack`` resolved from
  the session cookie, so logged-in users need no token; with ``fallback=JWTAuthenticator(...)``
  clients that present a token (mobile apps) are verified by it instead.
* :class:`HubLifespan` — runs the hub for the server's lifetime (uvicorn, hypercorn). Servers
  that do not run the ASGI lifespan (daphne, and so ``manage.py runserver`` with daphne) get
  the hub started by the first websocket instead; see ``docs/adapters/channels.md``.

Sending from synchronous Django code (views, signals, Celery tasks, management commands) goes
through :class:`notifykit.redis.RedisSyncPublisher`, which needs no event loop and no hub.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from channels.sessions import InstanceSessionWrapper

from ..auth import CallableAuthenticator
from ..errors import AuthenticationError
from ..gateway import Gateway
from ..model import Handshake, Principal, validate_user_id
from .asgi.lifespan import HubLifespan
from .asgi.transport import WebSocketEndpoint

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from ..hub import Hub
    from ..protocols import Authenticator, HandshakeAuthenticator, TopicPolicy
    from .asgi.transport import Receive, Scope, Send

__all__ = ["ChannelsUserAuthenticator", "HubLifespan", "NotifyConsumer"]

logger = logging.getLogger("notifykit.channels")


class ChannelsUserAuthenticator(CallableAuthenticator):
    """Authenticates a websocket by the Django user in ``scope["user"]`` (put there by
    Channels' ``AuthMiddlewareStack`` from the session cookie).

    The user id is ``str(user.pk)`` unless ``user_id`` says otherwise; ``claims(user)``
    (e.g. ``{"topics": [...]}`` for the default topic policy) becomes the principal's claims.
    Both run in a worker thread, so they may query the database. The connection ends with
    ``4001`` when the session expires (``session_expiry=False`` keeps it open). An anonymous
    user is no login: refused with 4001, or served broadcasts only where anonymous clients
    are allowed. A client that presents a token is verified by ``fallback`` instead, if given.
    The gateway requires ``allowed_origins`` with it (session cookies are sent by browsers on
    their own).
    """

    def __init__(
        self,
        fallback: Authenticator | None = None,
        *,
        user_id: Callable[[Any], str] | None = None,
        claims: Callable[[Any], Mapping[str, Any]] | None = None,
        session_expiry: bool = True,
    ) -> None:
        super().__init__(self._identify_user, fallback=fallback, cookie_based=True)
        self._user_id = user_id
        self._claims = claims
        self._session_expiry = session_expiry

    async def _identify_user(self, handshake: Handshake) -> Principal | None:
        scope = handshake.request
        if not isinstance(scope, dict) or "user" not in scope:
            raise AuthenticationError(
                "the server cannot read logins: wrap the consumer in AuthMiddlewareStack"
            )
        principal: Principal | None = await database_sync_to_async(self._principal)(scope)
        return principal

    def _principal(self, scope: dict[str, Any]) -> Principal | None:
        """In a worker thread: the user may be lazy, and the callbacks may query."""
        user = scope["user"]
        if not getattr(user, "is_authenticated", False):
            return None
        user_id = validate_user_id(self._user_id(user) if self._user_id else str(user.pk))
        claims = dict(self._claims(user)) if self._claims else {}
        expires_at = None
        session = scope.get("session")
        if self._session_expiry and session is not None:
            expires_at = session.get_expiry_date().timestamp()
        return Principal(user_id, claims, expires_at)


def _unwrapped(send: Send) -> Send:
    """The server's own ``send`` under Channels' ``SessionMiddleware``.

    That middleware wraps ``send`` to save the session on HTTP responses; for websocket
    messages its wrapper only forwards them, at the cost of a coroutine and two session
    look-ups per frame, and it hides the server's transport from the ASGI transport's
    ``abort()``. Every message notifykit sends is a
    websocket message, so it goes straight to the server.
    """
    while isinstance(owner := getattr(send, "__self__", None), InstanceSessionWrapper):
        send = owner.real_send
    return send


class NotifyConsumer:
    """An ASGI app serving notifykit websockets, for a Channels ``URLRouter`` route.

    Takes the :class:`~notifykit.gateway.Gateway` options (``allowed_origins``,
    ``allow_anonymous``, ``topic_policy``, ``queue_size``, ``max_frame_bytes``...); ``gateway``
    is that gateway. If the hub is not running when a client arrives (no server lifespan ran
    :class:`HubLifespan`: daphne), it is started then, once, in a task of its own that keeps
    it running until the event loop ends.
    """

    def __init__(
        self,
        hub: Hub,
        authenticator: Authenticator | HandshakeAuthenticator,
        *,
        allowed_origins: Iterable[str] = (),
        allow_anonymous: bool = False,
        topic_policy: TopicPolicy | None = None,
        **gateway_options: Any,
    ) -> None:
        self.gateway = Gateway(
            hub,
            authenticator,
            allowed_origins=allowed_origins,
            allow_anonymous=allow_anonymous,
            topic_policy=topic_policy,
            **gateway_options,
        )
        self._endpoint = WebSocketEndpoint(self.gateway)
        self._starting: asyncio.Future[None] | None = None
        self._runner: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one websocket connection (scope type ``websocket``)."""
        if scope["type"] == "websocket" and not self.gateway.hub.running:
            await self._start_hub()
        await self._endpoint(scope, receive, _unwrapped(send))

    async def _start_hub(self) -> None:
        """Start the hub in a task of its own (once), and wait until it runs or failed."""
        if self._starting is None:
            loop = asyncio.get_running_loop()
            self._starting = loop.create_future()
            self._runner = loop.create_task(self._run_hub(self._starting))
        # Shielded: a client that leaves must not cancel the start others wait for. If the
        # start failed, the gateway refuses the client with 1013 (try again later).
        with suppress(Exception):
            await asyncio.shield(self._starting)

    async def _run_hub(self, started: asyncio.Future[None]) -> None:
        hub = self.gateway.hub
        try:
            await hub.__aenter__()
        except RuntimeError as exc:  # closed already: the server is shutting down
            logger.info("not starting the hub: %s", exc)
            started.set_exception(exc)
            return
        except Exception as exc:
            logger.exception("the hub failed to start")
            started.set_exception(exc)
            self._starting = None  # the next client tries again
            return
        try:
            logger.info("hub started by the first websocket (no ASGI lifespan ran)")
            started.set_result(None)
            await asyncio.Event().wait()  # until the event loop ends
        finally:
            await hub.aclose()
