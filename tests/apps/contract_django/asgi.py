"""The Channels application of the contract tests (``contract_django.asgi:application``).

Websockets at ``/ws`` go through ``AuthMiddlewareStack`` to ``NotifyConsumer``; the Django user
authenticator falls back to the JWT for clients that present a token (all of them here).
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "contract_django.settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from contract_config import authenticator, gateway_options  # noqa: E402
from django.urls import path  # noqa: E402

from notifykit.adapters.channels import (  # noqa: E402
    ChannelsUserAuthenticator,
    HubLifespan,
    NotifyConsumer,
)

from .notify import hub  # noqa: E402

consumer = NotifyConsumer(
    hub, ChannelsUserAuthenticator(fallback=authenticator()), **gateway_options()
)
application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AuthMiddlewareStack(URLRouter([path("ws", consumer)])),
        "lifespan": HubLifespan(hub),
    }
)
