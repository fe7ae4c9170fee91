"""The README's FastAPI example works as pasted: it is written to a file, run under a real
uvicorn, and a real websocket client receives what its endpoint sends."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from servers_e2e import (
    FRAME_TIMEOUT,
    SECRET,
    clean_env,
    client,
    log_on_failure,
    notification,
    start_app,
    token,
    welcome,
)

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

README = Path(__file__).resolve().parent.parent / "README.md"


def fastapi_example() -> str:
    section = README.read_text().split("## In a FastAPI app", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found, "the README has a FastAPI example"
    return found.group(1)


async def test_the_readme_fastapi_example_runs_as_pasted(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    (tmp_path / "app.py").write_text(fastapi_example())
    server = start_app(
        "app:app",
        app_dir=tmp_path,
        health_path="/notify/healthz",
        env=clean_env(JWT_SECRET=SECRET, API_KEY="readme-key"),
    )
    try:
        with log_on_failure(request, server):
            async with client(server, token("42"), path="/notify/ws") as ws:
                await welcome(ws)
                async with httpx.AsyncClient(timeout=FRAME_TIMEOUT) as http:
                    response = await http.post(f"{server.url}/orders/7/ship?user_id=42")
                assert response.json() == {"shipped": 7}
                note = await notification(ws)
                assert (note["event"], note["data"], note["stream"]) == (
                    "order.shipped",
                    {"order": 7},
                    "u:42",
                )
    finally:
        server.stop()
