"""A minimal client: connect with a token and print every notification.

    JWT_SECRET=... python client.py USER [ws://127.0.0.1:8000/ws]

Mints its own development token with ``JWT_SECRET`` (a real client gets one from your login
service).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from websockets.asyncio.client import connect

from notifykit import mint_token


async def main(user: str, url: str) -> None:
    token = mint_token(user, secret=os.environ["JWT_SECRET"], ttl=3600)
    async with connect(url, subprotocols=["notifykit.v1", f"bearer.{token}"]) as ws:
        async for message in ws:
            frame = json.loads(message)
            print(frame["type"], json.dumps(frame), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "ws://127.0.0.1:8000/ws"))
