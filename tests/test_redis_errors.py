"""No redis-py, socket or timeout error escapes a public method of notifykit.redis.

Every public method and property of RedisPropagator, RedisClusterPropagator, RedisPresence and
RedisSyncPublisher (standalone and cluster) is called against a Redis that was killed
(connections refused) and one that was frozen with SIGSTOP (connections open, nothing answers),
on an instance started before the fault and on one started during it. Each call returns, raises
:class:`~notifykit.errors.PropagationError`, or — only ``subscribe``, which by contract waits
for Redis to come back — is still waiting when the test stops it. The list of calls is checked
against the classes' public names, so a new public method cannot go untested.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from servers import FAST_RECOVERY, Recorder, RedisClusterServers, RedisServer

from notifykit.errors import PropagationError
from notifykit.model import ToUsers
from notifykit.redis import (
    RedisClusterPropagator,
    RedisPresence,
    RedisPropagator,
    RedisSyncPublisher,
)

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

CALL_BOUND = 6.0
"""Seconds any one call may take against a broken Redis (its timeouts here are 0.5 to 1 s)."""
MAY_WAIT = {"subscribe"}
"""Calls whose contract is to wait for Redis to come back: given a second, not more."""


def public_names(cls: type) -> set[str]:
    """The public methods and properties of ``cls``."""
    return {
        name
        for name, value in inspect.getmembers(cls)
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }


@dataclass
class Outcome:
    name: str
    error: BaseException | None = None
    waited: bool = False

    @property
    def allowed(self) -> bool:
        if self.waited:
            return self.name in MAY_WAIT
        return self.error is None or isinstance(self.error, PropagationError)


async def call(name: str, action: Callable[[], Any]) -> Outcome:
    """Run ``action`` (sync or async), bounded; what it did."""
    outcome = Outcome(name, waited=True)
    with anyio.move_on_after(1.0 if name in MAY_WAIT else CALL_BOUND):
        try:
            result = action()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            outcome.error = exc
        outcome.waited = False
    return outcome


Calls = dict[str, Callable[[Any], Any]]
"""Public name → how to call it on an instance (the lifecycle methods are called apart)."""


def propagator_calls() -> Calls:
    return {
        "subscribe": lambda p: p.subscribe(["u:2"]),
        "unsubscribe": lambda p: p.unsubscribe(["u:1"]),
        "publish": lambda p: p.publish(["u:1", "u:2"], b"during the fault"),
        "barrier": lambda p: p.barrier(["u:1"]),
        "read": lambda p: p.read({"u:1": None, "u:2": 0}, 10),
        "healthy": lambda p: p.healthy,
        "statistics": lambda p: p.statistics(),
        "address": lambda p: p.address,
    }


def presence_calls() -> Calls:
    return {
        "connected": lambda p: p.connected("ada", "c2"),
        "disconnected": lambda p: p.disconnected("ada", "c1"),
        "is_online": lambda p: p.is_online("ada"),
        "connections_of": lambda p: p.connections_of("ada"),
        "online_count": lambda p: p.online_count(),
        "online_users": lambda p: p.online_users(10),
        "healthy": lambda p: p.healthy,
        "statistics": lambda p: p.statistics(),
    }


def sync_publisher_calls() -> Calls:
    return {
        "publish": lambda p: p.publish(ToUsers(("ada",)), "during"),
        "notify_user": lambda p: p.notify_user("ada", "during"),
        "notify_users": lambda p: p.notify_users(["ada", "bob"], "during"),
        "notify_topic": lambda p: p.notify_topic("news", "during"),
        "notify_authenticated": lambda p: p.notify_authenticated("during"),
        "broadcast": lambda p: p.broadcast("during"),
    }


@dataclass
class Subject:
    """A class under test, how to build it on a URL, its calls, and how to prepare it."""

    cls: type
    build: Callable[[str], Any]
    calls: Calls
    start: Callable[[Any], Awaitable[None]]
    prepare: Callable[[Any], Awaitable[None]]
    close: str = "aclose"
    """The name of the method that ends its lifecycle."""

    @property
    def lifecycle(self) -> set[str]:
        """The public names called apart from :attr:`calls`."""
        return {"start", self.close} if self.close == "aclose" else {self.close}


async def start_propagator(propagator: Any) -> None:
    await propagator.start(Recorder())


async def subscribe_one(propagator: Any) -> None:
    await propagator.subscribe(["u:1"])


async def start_presence(presence: Any) -> None:
    await presence.start()


async def connect_one(presence: Any) -> None:
    await presence.connected("ada", "c1")


async def nothing(instance: Any) -> None:
    """A sync publisher has nothing to start: it connects when constructed or first used."""


async def publish_one(publisher: Any) -> None:
    publisher.notify_user("ada", "before")


SUBJECTS = {
    "RedisPropagator": Subject(
        RedisPropagator,
        lambda url: RedisPropagator(url, prefix="nk-errors", **FAST_RECOVERY),
        propagator_calls(),
        start_propagator,
        subscribe_one,
    ),
    "RedisClusterPropagator": Subject(
        RedisClusterPropagator,
        lambda url: RedisClusterPropagator(url, prefix="nk-errors", **FAST_RECOVERY),
        propagator_calls(),
        start_propagator,
        subscribe_one,
    ),
    "RedisPresence": Subject(
        RedisPresence,
        lambda url: RedisPresence(url, prefix="nk-errors", ttl=3.0, timeout=0.25),
        presence_calls(),
        start_presence,
        connect_one,
    ),
    "RedisPresence-cluster": Subject(
        RedisPresence,
        lambda url: RedisPresence(url, prefix="nk-errors", ttl=3.0, timeout=0.25, cluster=True),
        presence_calls(),
        start_presence,
        connect_one,
    ),
    "RedisSyncPublisher": Subject(
        RedisSyncPublisher,
        lambda url: RedisSyncPublisher(url, prefix="nk-errors", timeout=0.25),
        sync_publisher_calls(),
        nothing,
        publish_one,
        close="close",
    ),
    "RedisSyncPublisher-cluster": Subject(
        RedisSyncPublisher,
        lambda url: RedisSyncPublisher(url, prefix="nk-errors", timeout=0.25, cluster=True),
        sync_publisher_calls(),
        nothing,
        publish_one,
        close="close",
    ),
}


@pytest.mark.parametrize("subject", SUBJECTS.values(), ids=SUBJECTS.keys())
def test_every_public_name_is_exercised(subject: Subject) -> None:
    assert set(subject.calls) | subject.lifecycle == public_names(subject.cls)


@dataclass
class Fault:
    """Break every node of a deployment, and mend it afterwards."""

    url: str
    nodes: list[RedisServer]
    kind: str

    def apply(self) -> None:
        for node in self.nodes:
            node.kill() if self.kind == "killed" else node.pause()

    def mend(self) -> None:
        for node in self.nodes:
            if self.kind == "frozen":
                node.resume()


@pytest.fixture(params=["killed", "frozen"])
def fault_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


def deployment_for(name: str, request: pytest.FixtureRequest, kind: str) -> Fault:
    if "Cluster" in name or name.endswith("cluster"):
        cluster: RedisClusterServers = request.getfixturevalue("fresh_redis_cluster")
        return Fault(cluster.url, cluster.nodes, kind)
    server: RedisServer = request.getfixturevalue("redis_server")
    return Fault(server.url, [server], kind)


@pytest.fixture
def fault(request: pytest.FixtureRequest, fault_kind: str) -> Iterator[Fault]:
    name = request.node.callspec.params["name"]
    broken = deployment_for(name, request, fault_kind)
    try:
        yield broken
    finally:
        broken.mend()


@pytest.mark.parametrize("name", SUBJECTS.keys())
async def test_no_redis_error_escapes_a_public_method_during_an_outage(
    name: str, fault: Fault
) -> None:
    subject = SUBJECTS[name]
    before, during = subject.build(fault.url), subject.build(fault.url)
    outcomes: list[Outcome] = []
    try:
        await subject.start(before)
        await subject.prepare(before)
        fault.apply()
        outcomes.append(await call("start", lambda: subject.start(during)))
        for instance in (before, during):
            for method, action in subject.calls.items():
                outcomes.append(await call(method, lambda a=action, i=instance: a(i)))
    finally:
        for instance in (before, during):
            outcomes.append(await call(subject.close, getattr(instance, subject.close)))

    wrong = [o for o in outcomes if not o.allowed]
    assert not wrong, "\n".join(
        f"{o.name}: "
        + (
            "still waiting"
            if o.waited
            else f"{type(o.error).__module__}.{type(o.error).__qualname__}: {o.error}"
        )
        for o in wrong
    )
    # The fault was real: writing to Redis failed, and said so in notifykit's terms.
    writes = [o for o in outcomes if o.name in ("publish", "connected")]
    assert len(writes) == 2
    assert all(isinstance(o.error, PropagationError) for o in writes), writes
