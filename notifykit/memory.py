"""In-memory implementations: the default for one process, and what apps unit-test against.

* :class:`MemorySocketState` — the connections this instance holds, by routing key.
* :class:`MemoryPropagator` — propagation within one process. Propagators that share a
  :class:`MemoryBus` behave like instances that share a Redis: each receives only the keys it
  subscribed to. With no bus given, a propagator has a bus of its own (the common case).
* :class:`MemoryPresence` — who is online. Presences made with :meth:`MemoryPresence.peer`
  share what they record, as instances of one deployment share a Redis.

All of them run on any anyio backend (asyncio or trio).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio.lowlevel

from .errors import NotRunning
from .model import BROADCAST_KEY

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from .protocols import Deliver, Receiver

__all__ = ["MemoryBus", "MemoryPresence", "MemoryPropagator", "MemorySocketState"]

logger = logging.getLogger("notifykit.memory")


class MemorySocketState:
    """:class:`~notifykit.protocols.SocketState` as a dict of sets: O(1) add and remove, and a
    key is deleted with its last connection."""

    __slots__ = ("_by_key", "_users")

    def __init__(self) -> None:
        self._by_key: dict[str, set[Receiver]] = {}
        self._users = 0

    def add(self, key: str, connection: Receiver) -> bool:
        """Put ``connection`` under ``key``; True if ``key`` was empty."""
        members = self._by_key.get(key)
        if members is None:
            self._by_key[key] = {connection}
            if key.startswith("u:"):
                self._users += 1
            return True
        members.add(connection)
        return False

    def remove(self, key: str, connection: Receiver) -> bool:
        """Take ``connection`` from under ``key``; True if ``key`` is now empty."""
        members = self._by_key.get(key)
        if members is None or connection not in members:
            return False
        members.discard(connection)
        if members:
            return False
        del self._by_key[key]
        if key.startswith("u:"):
            self._users -= 1
        return True

    def members(self, key: str) -> Collection[Receiver]:
        """The connections under ``key``."""
        return self._by_key.get(key, ())

    def keys(self) -> Collection[str]:
        """Every occupied key."""
        return self._by_key.keys()

    @property
    def connection_count(self) -> int:
        """Distinct connections (every connection is under the broadcast key)."""
        return len(self._by_key.get(BROADCAST_KEY, ()))

    @property
    def user_count(self) -> int:
        """Distinct users with at least one connection."""
        return self._users


class MemoryBus:
    """What in-process propagators share, like instances share a Redis server."""

    __slots__ = ("subscribers",)

    def __init__(self) -> None:
        self.subscribers: dict[str, set[MemoryPropagator]] = {}


class MemoryPropagator:
    """:class:`~notifykit.protocols.Propagator` within one process.

    Delivery is synchronous and in publish order: when ``publish`` returns, every subscribed
    propagator's ``deliver`` has been called.
    """

    def __init__(self, bus: MemoryBus | None = None) -> None:
        self._bus = bus if bus is not None else MemoryBus()
        self._deliver: Deliver | None = None
        self._keys: set[str] = set()
        self._published = 0
        self._received = 0

    async def start(self, deliver: Deliver) -> None:
        """Start delivering to ``deliver``."""
        if self._deliver is not None:
            raise RuntimeError("this propagator is already started")
        self._deliver = deliver

    async def aclose(self) -> None:
        """Drop every subscription. Idempotent."""
        await self.unsubscribe(list(self._keys))
        self._deliver = None

    async def subscribe(self, keys: Collection[str]) -> None:
        """Receive payloads published to ``keys`` from now on."""
        if self._deliver is None:
            raise NotRunning("the propagator is not started")
        for key in keys:
            if key not in self._keys:
                self._keys.add(key)
                self._bus.subscribers.setdefault(key, set()).add(self)
        await anyio.lowlevel.checkpoint()

    async def unsubscribe(self, keys: Collection[str]) -> None:
        """Stop receiving payloads for ``keys``."""
        subscribers = self._bus.subscribers
        for key in keys:
            if key in self._keys:
                self._keys.discard(key)
                peers = subscribers[key]
                peers.discard(self)
                if not peers:
                    del subscribers[key]
        await anyio.lowlevel.checkpoint()

    async def publish(self, keys: Sequence[str], payload: bytes) -> None:
        """Deliver ``payload`` to every propagator on the bus subscribed to any of ``keys``."""
        if self._deliver is None:
            raise NotRunning("the propagator is not started")
        self._published += 1
        subscribers = self._bus.subscribers
        for key in keys:
            for peer in tuple(subscribers.get(key, ())):
                peer._receive(key, payload)
        await anyio.lowlevel.checkpoint()

    def _receive(self, key: str, payload: bytes) -> None:
        deliver = self._deliver
        if deliver is None:
            return
        self._received += 1
        try:
            deliver(key, payload)
        except Exception:
            logger.exception("deliver failed for key %r; continuing", key)

    @property
    def healthy(self) -> bool:
        """Always True while started: there is no backend to lose."""
        return self._deliver is not None

    def statistics(self) -> Mapping[str, int]:
        """``published`` and ``received`` payloads, and ``subscriptions`` now held."""
        return {
            "published": self._published,
            "received": self._received,
            "subscriptions": len(self._keys),
        }


class _Board:
    """What peers share: user → connection id → how many peers hold that connection id."""

    __slots__ = ("users",)

    def __init__(self) -> None:
        self.users: dict[str, dict[str, int]] = {}

    def add(self, user_id: str, connection_id: str) -> None:
        connections = self.users.setdefault(user_id, {})
        connections[connection_id] = connections.get(connection_id, 0) + 1

    def remove(self, user_id: str, connection_id: str) -> None:
        connections = self.users[user_id]
        holders = connections[connection_id] - 1
        if holders:
            connections[connection_id] = holders
            return
        del connections[connection_id]
        if not connections:
            del self.users[user_id]


class MemoryPresence:
    """:class:`~notifykit.protocols.Presence` in memory: exact, immediate, and O(1) per call.

    Memory grows with the connections recorded and nothing else. Every read is exact (there is
    no heartbeat and no ttl: a process that dies takes its presence with it), and ``healthy`` is
    always True. Not thread-safe: all calls happen on the event loop.
    """

    __slots__ = ("_board", "_connections", "_local", "_state")

    def __init__(self) -> None:
        self._board = _Board()
        self._local: dict[str, set[str]] = {}
        self._connections = 0
        self._state = "new"  # "new" → "running" → "closed"

    def peer(self) -> MemoryPresence:
        """A new, unstarted presence sharing this one's records: a second "instance"."""
        other = type(self)()
        other._board = self._board
        return other

    async def start(self) -> None:
        """Begin recording; a no-op if already started."""
        if self._state == "closed":
            raise NotRunning("this presence is closed")
        self._state = "running"
        await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Remove every connection this instance recorded. Idempotent."""
        if self._state == "running":
            for user_id, connections in self._local.items():
                for connection_id in connections:
                    self._board.remove(user_id, connection_id)
            self._local.clear()
            self._connections = 0
        self._state = "closed"
        await anyio.lowlevel.checkpoint()

    def _check_running(self) -> None:
        if self._state != "running":
            raise NotRunning(f"this presence is {self._state}: call start() first")

    async def connected(self, user_id: str, connection_id: str) -> None:
        """Record connection ``connection_id`` of ``user_id`` on this instance."""
        self._check_running()
        connections = self._local.setdefault(user_id, set())
        if connection_id not in connections:
            connections.add(connection_id)
            self._connections += 1
            self._board.add(user_id, connection_id)
        await anyio.lowlevel.checkpoint()

    async def disconnected(self, user_id: str, connection_id: str) -> None:
        """Forget connection ``connection_id`` of ``user_id``; a no-op if unknown or closed."""
        if self._state == "closed":
            await anyio.lowlevel.checkpoint()
            return
        self._check_running()
        connections = self._local.get(user_id)
        if connections is not None and connection_id in connections:
            connections.discard(connection_id)
            self._connections -= 1
            if not connections:
                del self._local[user_id]
            self._board.remove(user_id, connection_id)
        await anyio.lowlevel.checkpoint()

    async def is_online(self, user_id: str) -> bool:
        """True if any peer holds a connection of ``user_id``."""
        self._check_running()
        await anyio.lowlevel.checkpoint()
        return user_id in self._board.users

    async def connections_of(self, user_id: str) -> list[str]:
        """The ids of ``user_id``'s connections on every peer."""
        self._check_running()
        await anyio.lowlevel.checkpoint()
        return list(self._board.users.get(user_id, ()))

    async def online_users(self, limit: int = 10_000) -> list[str]:
        """Up to ``limit`` users online on any peer."""
        self._check_running()
        await anyio.lowlevel.checkpoint()
        if limit <= 0:
            return []
        users: list[str] = []
        for user_id in self._board.users:
            if len(users) >= limit:
                break
            users.append(user_id)
        return users

    async def online_count(self) -> int:
        """How many users are online on any peer."""
        self._check_running()
        await anyio.lowlevel.checkpoint()
        return len(self._board.users)

    @property
    def healthy(self) -> bool:
        """Always True: there is no backend to lose."""
        return True

    def statistics(self) -> Mapping[str, int]:
        """``local_users`` and ``local_connections`` recorded by this instance, and
        ``online_users`` across its peers."""
        return {
            "local_users": len(self._local),
            "local_connections": self._connections,
            "online_users": len(self._board.users),
        }
