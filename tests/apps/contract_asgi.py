"""The ASGI adapter for the contract tests: ``NotifyApp`` as the root app (it runs the hub in the
server's lifespan), under ``uvicorn contract_asgi:app``."""

from __future__ import annotations

from contract_config import authenticator, gateway_options, hub

from notifykit.adapters.asgi import NotifyApp

app = NotifyApp(hub(), authenticator(), **gateway_options())
