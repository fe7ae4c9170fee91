"""Starlette routes for the files a browser needs: ``/client.js`` always, ``/demo`` on request.

::

    routes = [*client_routes(), *demo_routes(hub, DemoTokens(secret=SECRET))]

:func:`client_routes` serves the browser client (``notifykit/static/client.js``) at
``/client.js`` below wherever the app is mounted. :func:`demo_routes` serves the demo page at
``/demo`` with two endpoints of its own — ``POST /demo/token`` mints a development token for
any user name, ``POST /demo/send`` publishes without an API key — so it is for development
only: ``notifykit serve --demo`` turns it on. The files come from the installed package
(``importlib.resources``) and are read once, when the routes are made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...errors import ConfigurationError, InvalidNotification, NotRunning, PropagationError
from ...jwt import JWTAuthenticator, mint_token
from .publish import parse_publish

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request
    from starlette.routing import BaseRoute

    from ...hub import Hub

__all__ = ["DemoTokens", "client_routes", "demo_routes", "static_file"]

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
}
_DEMO_ASSETS = ("demo.css", "demo.js", "favicon.svg")
_MAX_DEMO_BODY = 64 * 1024


def static_file(name: str) -> Response:
    """A response with ``notifykit/static/<name>`` (read now), typed by its extension."""
    body = files("notifykit").joinpath("static", name).read_bytes()
    media_type = _TYPES.get(name[name.rfind(".") :], "application/octet-stream")
    return Response(body, media_type=media_type, headers={"Cache-Control": "no-cache"})


def _serve(response: Response) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return response

    return endpoint


def client_routes() -> list[BaseRoute]:
    """``GET /client.js``: the browser client, an ES module."""
    return [Route("/client.js", _serve(static_file("client.js")), methods=["GET"])]


@dataclass(frozen=True, slots=True)
class DemoTokens:
    """How the demo mints development tokens (HMAC): the same settings the server verifies."""

    secret: str
    algorithm: str = "HS256"
    ttl: float = 15 * 60
    audience: str | None = None
    issuer: str | None = None
    user_claim: str = "sub"
    topics_claim: str = "topics"

    @classmethod
    def matching(
        cls, authenticator: JWTAuthenticator, secret: str | None, topics_claim: str = "topics"
    ) -> DemoTokens:
        """Tokens that ``authenticator`` (holding ``secret``) accepts: its first HMAC algorithm,
        its audience, issuer and user claim. Raises ConfigurationError without an HMAC secret."""
        hmac = [a for a in authenticator.algorithms if a.startswith("HS")]
        if not secret or not hmac:
            raise ConfigurationError("the demo mints HMAC tokens: it needs a JWT secret")
        return cls(
            secret,
            hmac[0],
            audience=authenticator.audience,
            issuer=authenticator.issuer,
            user_claim=authenticator.user_claim,
            topics_claim=topics_claim,
        )

    def mint(self, user: str) -> str:
        """A token for ``user`` that allows every topic; raises ConfigurationError for an
        unusable user id."""
        claims: dict[str, Any] = {self.topics_claim: ["*"]}
        if self.user_claim != "sub":
            claims[self.user_claim] = user
        return mint_token(
            user,
            secret=self.secret,
            ttl=self.ttl,
            algorithm=self.algorithm,
            claims=claims,
            audience=self.audience,
            issuer=self.issuer,
        )


def demo_routes(hub: Hub, tokens: DemoTokens) -> list[BaseRoute]:
    """The demo page and its endpoints (development only: anyone can mint tokens and send).

    * ``GET /demo`` — the page (and ``/demo/demo.css``, ``/demo/demo.js``);
    * ``POST /demo/token`` ``{"user": "alice"}`` → ``{"token": ...}``;
    * ``POST /demo/send`` — a ``POST /publish`` body, published without an API key → 202
      ``{"id"}``.
    """

    async def token(request: Request) -> Response:
        refusal = _refuse_body(request)
        if refusal is not None:
            return refusal
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        user = body.get("user") if isinstance(body, dict) else None
        if not isinstance(user, str) or not user.strip():
            return _error(400, "bad_request", 'send {"user": "<name>"}')
        try:
            return JSONResponse({"token": tokens.mint(user.strip())})
        except ConfigurationError as exc:
            return _error(400, "bad_request", str(exc))

    async def send(request: Request) -> Response:
        refusal = _refuse_body(request)
        if refusal is not None:
            return refusal
        try:
            req = parse_publish(await request.body())
            notification_id = await hub.publish(req.target, req.event, req.data)
        except InvalidNotification as exc:
            return _error(400, "bad_request", str(exc))
        except (PropagationError, NotRunning) as exc:
            return _error(503, "unavailable", f"could not publish: {exc}")
        return JSONResponse({"id": notification_id}, status_code=202)

    routes: list[BaseRoute] = [
        Route("/demo", _serve(static_file("demo.html")), methods=["GET"]),
        Route("/demo/token", token, methods=["POST"]),
        Route("/demo/send", send, methods=["POST"]),
    ]
    routes += [
        Route(f"/demo/{name}", _serve(static_file(name)), methods=["GET"]) for name in _DEMO_ASSETS
    ]
    return routes


def _refuse_body(request: Request) -> Response | None:
    """A refusal unless the request declares a body of at most ``_MAX_DEMO_BODY`` bytes (the
    demo page's ``fetch`` always declares its length)."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        return _error(411, "length_required", "send a Content-Length header")
    if int(declared) > _MAX_DEMO_BODY:
        return _error(413, "too_large", f"body larger than {_MAX_DEMO_BODY} bytes")
    return None


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": code, "message": message}, status_code=status)
