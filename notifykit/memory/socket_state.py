"""In-memory :class:`~notifykit.protocols.SocketState`: the connections this instance holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..model import BROADCAST_KEY

if TYPE_CHECKING:
    from collections.abc import Collection

    from ..protocols import Receiver

__all__ = ["MemorySocketState"]


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
