"""What every contract-test server shares: one hub on the test's Redis, one JWT secret, one set
of gateway options, all read from the environment (tests/adapters_e2e.py sets it).

Used by contract_asgi.py (uvicorn), contract_websockets.py and contract_django/ (Channels under
uvicorn), so the three adapters are configured identically and differ only in their framework.
"""

from __future__ import annotations

import os
from typing import Any

from notifykit import Hub, JWTAuthenticator
from notifykit.redis import RedisPropagator


def hub() -> Hub:
    """A hub on the test's Redis, under the test's channel prefix."""
    return Hub(
        RedisPropagator(os.environ["NK_REDIS_URL"], prefix=os.environ["NK_PREFIX"]),
        shutdown_timeout=5,
    )


def authenticator() -> JWTAuthenticator:
    """HS256 tokens signed with the test's secret."""
    return JWTAuthenticator(secret=os.environ["NK_SECRET"])


def gateway_options() -> dict[str, Any]:
    """The gateway options every adapter is served with."""
    return {
        "allowed_origins": [os.environ["NK_ORIGIN"]],
        "allow_anonymous": True,
        "max_frame_bytes": int(os.environ["NK_MAX_FRAME"]),
        "queue_size": int(os.environ["NK_QUEUE_SIZE"]),
        "close_timeout": float(os.environ["NK_CLOSE_TIMEOUT"]),
    }
