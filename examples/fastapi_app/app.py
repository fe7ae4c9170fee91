"""A FastAPI shop that pushes notifications to its logged-in users with notifykit.

Users log in to the app itself (a session cookie, Starlette's ``SessionMiddleware``); their
browser's websocket to ``/notify/ws`` is authenticated by that same session — no token to
mint. Clients that are not browsers (a mobile app, a service) can still connect with a JWT.

    pip install 'notifykit[server]' fastapi itsdangerous
    SESSION_SECRET=... JWT_SECRET=... uvicorn app:app --port 8000
    # open http://127.0.0.1:8000/, log in as anyone, press "Ship an order"

Settings (environment): ``SESSION_SECRET`` and ``JWT_SECRET`` (required), ``ALLOWED_ORIGIN``
(the page's origin, default ``http://127.0.0.1:8000``: browsers send the session cookie to any
page's websocket, so the origin check is what stops other sites), ``REDIS_URL`` (optional:
several app processes then share notifications), ``API_KEY`` (optional: enables
``POST /notify/publish``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection

from notifykit import Hub, JWTAuthenticator
from notifykit.adapters.asgi import ConnectionAuthenticator, NotifyApp


def make_hub() -> Hub:
    """In-memory for one process; on Redis to run several."""
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        return Hub()
    from notifykit.redis import RedisPropagator

    return Hub(RedisPropagator(redis_url, prefix="shop"))


hub = make_hub()


def current_user(conn: HTTPConnection) -> str | None:
    """Who is logged in: for HTTP routes (a FastAPI dependency) and for the websocket alike."""
    user: str | None = conn.session.get("user")
    return user


def require_user(request: Request) -> str:
    user = current_user(request)
    if user is None:
        raise HTTPException(status_code=401, detail="log in first")
    return user


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with hub:  # the app runs the hub; the mounted notifykit app does not
        yield


app = FastAPI(lifespan=lifespan)
app.add_middleware(SessionMiddleware, secret_key=os.environ["SESSION_SECRET"])
app.mount(
    "/notify",
    NotifyApp(
        hub,
        ConnectionAuthenticator(
            current_user, fallback=JWTAuthenticator(secret=os.environ["JWT_SECRET"])
        ),
        allowed_origins=[os.environ.get("ALLOWED_ORIGIN", "http://127.0.0.1:8000")],
        api_key=os.environ.get("API_KEY"),
    ),
)


@app.post("/login")
async def login(request: Request, body: dict[str, str]) -> dict[str, str]:
    """A stand-in for a real login: trusts the name it is given."""
    name = body.get("user", "").strip()
    if not name:
        raise HTTPException(status_code=400, detail="give a user name")
    request.session["user"] = name
    return {"user": name}


@app.post("/logout")
async def logout(request: Request) -> dict[str, bool]:
    request.session.clear()
    return {"ok": True}


@app.post("/orders/{order_id}/ship")
async def ship(order_id: int, user: str = Depends(require_user)) -> dict[str, Any]:
    """Ship an order and tell its buyer, on every tab and device they have open."""
    notification_id = await hub.notify_user(user, "order.shipped", {"order": order_id})
    return {"order": order_id, "notification": notification_id}


@app.get("/healthz")
async def healthz() -> dict[str, Any]:
    return {"status": "ok" if hub.healthy else "degraded"}


PAGE = """<!doctype html>
<meta charset="utf-8"><title>Shop</title>
<style>body{font:16px system-ui;margin:2rem;max-width:40rem}li{margin:.3rem 0}</style>
<h1>Shop</h1>
<p id="who">Not logged in.</p>
<form id="login"><input name="user" placeholder="your name" required>
<button>Log in</button></form>
<p><button id="ship">Ship an order</button> <span id="state">offline</span></p>
<ul id="log"></ul>
<script>
const $ = (id) => document.getElementById(id);
let socket;
function connect() {
  const url = location.origin.replace(/^http/, "ws") + "/notify/ws";
  socket = new WebSocket(url, ["notifykit.v1"]);   // the session cookie goes along
  socket.onopen = () => { $("state").textContent = "online"; };
  socket.onclose = (e) => {
    $("state").textContent = "offline (" + e.code + " " + e.reason + ")";
    if (e.code !== 4001 && e.code !== 4003) setTimeout(connect, 2000);
  };
  socket.onmessage = (e) => {
    const frame = JSON.parse(e.data);
    if (frame.type === "welcome") $("who").textContent = "Logged in as " + frame.user;
    if (frame.type === "notification") {
      const li = document.createElement("li");
      li.textContent = frame.event + " " + JSON.stringify(frame.data);
      $("log").prepend(li);
    }
  };
}
$("login").onsubmit = async (e) => {
  e.preventDefault();
  const user = new FormData(e.target).get("user");
  await fetch("/login", {method: "POST", headers: {"Content-Type": "application/json"},
                         body: JSON.stringify({user})});
  if (socket) socket.close();
  connect();
};
$("ship").onclick = () => fetch("/orders/" + Math.floor(Math.random() * 1000) + "/ship",
                                {method: "POST"});
connect();
</script>
"""


@app.get("/", response_class=HTMLResponse)
async def page() -> str:
    return PAGE
