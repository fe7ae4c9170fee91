"""Shared fixtures: the anyio backend, and (in tests/servers.py) real servers on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import RedisClusterServers, RedisServer


@pytest.fixture
def anyio_backend() -> str:
    """notifykit's Redis parts are asyncio-only, so the whole suite runs on asyncio."""
    return "asyncio"


# --- real Redis servers (tests/servers.py) ------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh standalone redis-server on a free port, stopped after the test."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A 3-master Redis Cluster shared by the session; tests must leave it as they found it
    (tests that break nodes use ``fresh_redis_cluster``)."""
    cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def fresh_redis_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    """A 3-master Redis Cluster of the test's own, for tests that kill nodes or move slots."""
    cluster = RedisClusterServers(tmp_path / "redis-cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
