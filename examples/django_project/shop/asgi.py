"""The ASGI application: Django for HTTP, notifykit for ``/ws/notify/``, the hub's lifespan.

Run it with uvicorn (``uvicorn shop.asgi:application``: it runs the lifespan, so the hub starts
and stops with the server and clients get 1001/1012 at shutdown) or daphne (no lifespan: the
first websocket starts the hub).
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()  # before importing anything that uses models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import path  # noqa: E402

from notifykit import JWTAuthenticator  # noqa: E402
from notifykit.adapters.channels import (  # noqa: E402
    ChannelsUserAuthenticator,
    HubLifespan,
    NotifyConsumer,
)

from .notify import hub  # noqa: E402

# Logged-in users are known from their session cookie; staff may follow the "staff:*" topics.
# Clients with a token (a mobile app) are verified by the JWT fallback, if configured.
authenticator = ChannelsUserAuthenticator(
    fallback=JWTAuthenticator(secret=settings.NOTIFYKIT_JWT_SECRET)
    if settings.NOTIFYKIT_JWT_SECRET
    else None,
    claims=lambda user: {"topics": ["staff:*"] if user.is_staff else []},
)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AuthMiddlewareStack(
            URLRouter(
                [
                    path(
                        "ws/notify/",
                        NotifyConsumer(
                            hub,
                            authenticator,
                            allowed_origins=settings.NOTIFYKIT_ALLOWED_ORIGINS,
                        ),
                    )
                ]
            )
        ),
        "lifespan": HubLifespan(hub),
    }
)
