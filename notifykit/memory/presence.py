"""In-memory :class:`~notifykit.protocols.Presence`: who is online, for one process.

Presences made with :meth:`MemoryPresence.peer` share what they record, as instances of one
deployment share a Redis: each records its own connections, and each sees everyone's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio.lowlevel

from ..errors import NotRunning

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["MemoryPresence"]


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
