"""A FastAPI app with notifykit mounted at ``/notify``, as an application would write it.

Run by tests/test_fastapi_mount.py under a real uvicorn; settings come from the environment.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from notifykit import Hub, JWTAuthenticator
from notifykit.adapters.asgi import NotifyApp

hub = Hub()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with hub:  # the host app runs the hub; the mounted sub-app does not
        yield


app = FastAPI(lifespan=lifespan)
app.mount(
    "/notify",
    NotifyApp(
        hub,
        JWTAuthenticator(secret=os.environ["APP_JWT_SECRET"]),
        api_key=os.environ["APP_API_KEY"],
    ),
)


@app.post("/orders/{order_id}/ship")
async def ship_order(order_id: int, user: str) -> dict[str, str]:
    notification_id = await hub.notify_user(user, "order.shipped", {"order": order_id})
    return {"id": notification_id}
