"""The harness of the propagator checks: started instances that record what they receive.

A :class:`Cluster` starts instances of one backend through a :data:`PropagatorFactory`, each
with a recording ``deliver`` and a sentinel key of its own; :meth:`Cluster.settle` proves that
what has not arrived yet will not (see :mod:`notifykit.testing.conformance`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import TYPE_CHECKING, TypeAlias

import anyio

from ..envelope import unstamp
from ..protocols import Propagator
from ._checking import bounded, expect, short

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..wire import Position

__all__ = [
    "Cluster",
    "DeliberateError",
    "Node",
    "PropagatorFactory",
    "expect_received",
    "first_difference",
]

PropagatorFactory: TypeAlias = Callable[[], AbstractAsyncContextManager[Propagator]]
"""Returns a context manager yielding a new unstarted propagator on the shared backend."""


def first_difference(got: Sequence[object], sent: Sequence[object]) -> int:
    """The index of the first item where ``got`` and ``sent`` differ (or the shorter length)."""
    pairs = zip(got, sent, strict=False)
    return next((i for i, (x, y) in enumerate(pairs) if x != y), min(len(got), len(sent)))


class DeliberateError(Exception):
    """Raised by a recording deliver to prove that a raising deliver ends nothing."""


class Node:
    """One started propagator with a recording ``deliver`` and a sentinel key of its own; every
    call and wait is bounded by ``timeout`` seconds."""

    def __init__(
        self, name: str, propagator: Propagator, sentinel_key: str, timeout: float
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.propagator = propagator
        self.sentinel_key = sentinel_key
        self.log: list[tuple[str, bytes]] = []
        """``(key, payload as published)`` for every delivery, in order."""
        self.stamps: list[tuple[str, Position | None]] = []
        """``(key, its position in the key's stream)`` for every delivery (None without
        history), in the same order as ``log``."""
        self.fail_on: set[bytes] = set()
        self._wakeup: anyio.Event | None = None

    def deliver(self, key: str, payload: bytes) -> None:
        position, payload = unstamp(payload)
        self.log.append((key, payload))
        self.stamps.append((key, position))
        if self._wakeup is not None:
            self._wakeup.set()
        if payload in self.fail_on:
            raise DeliberateError("deliver raising on purpose (conformance check)")

    def received(self) -> list[tuple[str, bytes]]:
        """Every delivery except sentinels."""
        return [entry for entry in self.log if entry[0] != self.sentinel_key]

    def payloads(self, key: str) -> list[bytes]:
        return [payload for k, payload in self.log if k == key]

    async def wait_until(self, done: Callable[[], bool], what: str) -> None:
        try:
            with anyio.fail_after(self.timeout):
                while not done():
                    self._wakeup = anyio.Event()
                    await self._wakeup.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: {what} not delivered within {self.timeout} s; "
                f"{len(self.log)} deliveries so far, the last: {short(self.log[-3:])}"
            ) from None
        finally:
            self._wakeup = None

    async def wait_for(self, key: str, payload: bytes) -> None:
        await self.wait_until(lambda: payload in self.payloads(key), f"{short(payload)} on {key}")

    async def subscribe(self, *keys: str) -> None:
        with bounded(f"{self.name}.subscribe({list(keys)})", self.timeout):
            await self.propagator.subscribe(keys)

    async def unsubscribe(self, *keys: str) -> None:
        with bounded(f"{self.name}.unsubscribe({list(keys)})", self.timeout):
            await self.propagator.unsubscribe(keys)

    async def publish(self, keys: Sequence[str], payload: bytes) -> None:
        with bounded(f"{self.name}.publish({list(keys)}, {short(payload)})", self.timeout):
            await self.propagator.publish(keys, payload)

    async def aclose(self) -> None:
        with bounded(f"{self.name}.aclose()", self.timeout):
            await self.propagator.aclose()


def expect_received(node: Node, expected: list[tuple[str, bytes]], rule: str) -> None:
    """Fail, naming ``rule``, unless ``node`` received exactly ``expected`` (sentinels aside)."""
    actual = node.received()
    expect(
        actual == expected,
        f"{rule}: {node.name} received {short(actual)}, expected {short(expected)}",
    )


class Cluster(AsyncExitStack):
    """``size`` started instances of one backend, each subscribed to its own sentinel key; every
    call and wait is bounded by ``timeout`` seconds."""

    def __init__(self, factory: PropagatorFactory, size: int, timeout: float) -> None:
        super().__init__()
        self._factory = factory
        self._size = size
        self._timeout = timeout
        self._prefix = f"t:nk-conformance-{secrets.token_hex(4)}"
        self._sentinels = 0
        self.nodes: list[Node] = []

    def key(self, name: str) -> str:
        """A routing key no other check run uses."""
        return f"{self._prefix}-{name}"

    async def __aenter__(self) -> Cluster:
        await super().__aenter__()
        try:
            for index in range(self._size):
                name = f"instance {'ABCDEFGH'[index]}"
                propagator = await self.enter_async_context(self._factory())
                expect(
                    isinstance(propagator, Propagator),
                    f"the factory yielded {propagator!r}, which is not a Propagator",
                )
                node = Node(name, propagator, self.key(f"sentinel-{index}"), self._timeout)
                with bounded(f"{name}.start(deliver)", self._timeout):
                    await propagator.start(node.deliver)
                self.push_async_callback(node.aclose)
                await node.subscribe(node.sentinel_key)
                self.nodes.append(node)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def settle(self, publisher: Node, nodes: Sequence[Node] | None = None) -> None:
        """Prove that what has not been delivered to ``nodes`` (default: all) was not going to
        be: publish a sentinel to each and await it there, twice. The first round passes
        everything published before it on the way; the second gives every reader of each
        instance (a backend may read each shard on its own connection) its turn after that."""
        for _round in range(2):
            sent = []
            for node in self.nodes if nodes is None else nodes:
                self._sentinels += 1
                payload = b"sentinel %d" % self._sentinels
                await publisher.publish([node.sentinel_key], payload)
                sent.append((node, payload))
            for node, payload in sent:
                await node.wait_for(node.sentinel_key, payload)
