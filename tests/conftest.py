"""Shared fixtures: the anyio backend, and (in tests/servers.py) real servers on free ports."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """notifykit's Redis parts are asyncio-only, so the whole suite runs on asyncio."""
    return "asyncio"
