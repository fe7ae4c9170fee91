"""Shared fixtures, the anyio backends, and the rules that keep the test lanes honest.

Every async test runs on each backend named in ``NOTIFYKIT_TEST_BACKENDS`` (comma-separated;
default ``asyncio,trio``), except tests marked ``redis``, ``e2e`` or ``asyncio_only``, which run
on asyncio alone (their trio variants are deselected): notifykit's Redis parts and the
websockets and Channels adapters are asyncio-only, and the e2e tests drive servers in other
processes through the ``websockets`` asyncio client.

The suite runs in three lanes (``scripts/test``): unit (``-m "not redis and not e2e"``, in
seconds), redis (``-m "redis and not e2e"``) and e2e (``-m e2e``). A test that starts a
redis-server must be marked ``redis``; one that starts a server process must be marked ``e2e``
(a module marks all its tests with ``pytestmark``), and so is one that runs the command line in
a subprocess. The first two rules are enforced, not trusted:

* at collection, a test that requests a Redis fixture without the ``redis`` mark stops the run;
* when a server starts — from a fixture, directly (``RedisServer(...).start()``) or through
  ``getfixturevalue`` — the test that starts it fails unless it carries the mark.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pytest
import servers_e2e
from servers import RedisClusterServers, RedisServer

P = ParamSpec("P")
R = TypeVar("R")

REDIS_FIXTURES = frozenset({"redis_server", "redis_cluster", "fresh_redis_cluster"})
"""Fixtures that start redis-server processes: a test using one must be marked ``redis``."""

ASYNCIO_ONLY = ("redis", "e2e", "asyncio_only")
"""Tests with one of these marks run on asyncio alone."""

# --- the backends -----------------------------------------------------------------------------

BACKENDS = ("asyncio", "trio")


def _backends() -> list[str]:
    """The backends ``NOTIFYKIT_TEST_BACKENDS`` names (default: both), in a stable order."""
    setting = os.environ.get("NOTIFYKIT_TEST_BACKENDS", ",".join(BACKENDS))
    chosen = {name.strip() for name in setting.split(",") if name.strip()}
    if not chosen or not chosen <= set(BACKENDS):
        raise pytest.UsageError(
            f"NOTIFYKIT_TEST_BACKENDS must name one or more of {', '.join(BACKENDS)}, "
            f"comma-separated; got {setting!r}"
        )
    return [name for name in BACKENDS if name in chosen]


def pytest_configure(config: pytest.Config) -> None:
    _backends()  # a bad NOTIFYKIT_TEST_BACKENDS stops the run at once


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every async test (every test using ``anyio_backend``) once per backend, unless it
    chooses its own with ``@pytest.mark.parametrize("anyio_backend", ["asyncio"])``."""
    chosen = any(
        "anyio_backend" in str(marker.args[0]).replace(" ", "").split(",")
        for marker in metafunc.definition.iter_markers("parametrize")
    )
    if "anyio_backend" in metafunc.fixturenames and not chosen:
        metafunc.parametrize("anyio_backend", _backends(), indirect=True)


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The backend this run of the test is on (see ``pytest_generate_tests``)."""
    backend: str = request.param
    return backend


# --- the lanes --------------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Stop the run on a Redis fixture used without the mark; keep asyncio-only tests there."""
    _stop_unmarked_redis_tests(items)
    elsewhere = {
        id(item)
        for item in items
        if any(item.get_closest_marker(mark) is not None for mark in ASYNCIO_ONLY)
        and getattr(item, "callspec", None) is not None
        and item.callspec.params.get("anyio_backend", "asyncio") != "asyncio"
    }
    if elsewhere:
        config.hook.pytest_deselected(items=[item for item in items if id(item) in elsewhere])
        items[:] = [item for item in items if id(item) not in elsewhere]


def _stop_unmarked_redis_tests(items: list[pytest.Item]) -> None:
    """Stop the run if a test requests a Redis fixture without the ``redis`` mark (checked on
    every collected test, before ``-m`` deselects any)."""
    unmarked = [
        item.nodeid
        for item in items
        if REDIS_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("redis") is None
    ]
    if unmarked:
        listed = "\n  ".join(unmarked)
        raise pytest.UsageError(
            f"these tests use a Redis fixture but are not marked @pytest.mark.redis, so the "
            f"unit lane would start Redis:\n  {listed}"
        )


_running: list[pytest.Item] = []  # the test being set up, run or torn down


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.pop()


def _only_when_marked(mark: str, what: str, start: Callable[P, R]) -> Callable[P, R]:
    """``start``, refusing to run for a test without ``mark``."""

    @functools.wraps(start)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        if _running and _running[-1].get_closest_marker(mark) is None:
            pytest.fail(
                f"{_running[-1].nodeid} starts {what} but is not marked @pytest.mark.{mark}: "
                f"mark the test (or its module, with pytestmark) so that it runs in the "
                f"{mark} lane and not in the unit lane",
                pytrace=False,
            )
        return start(*args, **kwargs)

    return guarded


@pytest.fixture(scope="session", autouse=True)
def _servers_start_only_in_their_lanes() -> Iterator[None]:
    """Make every redis-server and server-process start check its test's mark."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            RedisServer, "start", _only_when_marked("redis", "a redis-server", RedisServer.start)
        )
        start_process: Any = servers_e2e._start
        patch.setattr(
            servers_e2e, "_start", _only_when_marked("e2e", "a server process", start_process)
        )
        yield


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
