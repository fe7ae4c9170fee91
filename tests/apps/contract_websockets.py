"""The ``websockets`` adapter for the contract tests: ``python contract_websockets.py PORT``
serves until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys

from contract_config import authenticator, gateway_options, hub

from notifykit.adapters.websockets import serve


async def main(port: int) -> None:
    async with serve(
        hub(), authenticator(), host="127.0.0.1", port=port, **gateway_options()
    ) as server:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.close)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
