"""Which master of a Redis Cluster serves each hash slot (from ``CLUSTER SLOTS``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from redis.crc import key_slot

from ..errors import PropagationError
from ._connection import close_quietly, open_connection, pack
from ._errors import map_redis_errors

if TYPE_CHECKING:
    from ._connection import Endpoint, Settings

__all__ = ["SLOTS", "Topology"]

logger = logging.getLogger("notifykit.redis")

SLOTS = 16384
_CLUSTER_SLOTS = pack(b"CLUSTER", b"SLOTS")


class Topology:
    """The slot map of one cluster, refreshed from any node that answers.

    ``masters`` maps ``host:port`` to an :class:`~._connection.Endpoint` with the seed's
    credentials; :meth:`address_for` gives the master serving a channel's slot.
    """

    def __init__(self, seed: Endpoint, settings: Settings) -> None:
        self._seed = seed
        self._settings = settings
        self._slots: list[str | None] = [None] * SLOTS
        self.masters: dict[str, Endpoint] = {}
        self.known = False

    def address_for(self, channel: bytes) -> str | None:
        """``host:port`` of the master serving ``channel``'s slot (None if unknown)."""
        return self._slots[key_slot(channel)]

    async def refresh(self) -> bool:
        """Ask the known masters, then the seed, for ``CLUSTER SLOTS``; True if the map changed.

        Raises :class:`~notifykit.errors.PropagationError` (the last node's) if no node answered.
        """
        candidates = {**self.masters, self._seed.address: self._seed}
        error: PropagationError | None = None
        for endpoint in candidates.values():
            try:
                with map_redis_errors("read the slot map", endpoint.address):
                    reply = await self._ask(endpoint)
                slots, masters = self._parse(reply, endpoint)
            except PropagationError as exc:
                logger.debug("%s", exc)
                error = exc
                continue
            changed = slots != self._slots
            self._slots, self.masters, self.known = slots, masters, True
            return changed
        raise error if error is not None else PropagationError("no cluster node to ask")

    async def _ask(self, endpoint: Endpoint) -> object:
        connection = await open_connection(
            endpoint, self._settings, "ctl", socket_timeout=self._settings.command_timeout
        )
        try:
            await connection.send_packed_command(_CLUSTER_SLOTS, check_health=False)
            return await connection.read_response()
        finally:
            await close_quietly(connection)

    def _parse(
        self, reply: object, asked: Endpoint
    ) -> tuple[list[str | None], dict[str, Endpoint]]:
        if not isinstance(reply, list) or not reply:
            raise PropagationError(f"{asked.address} serves no slots: is it a cluster node?")
        slots: list[str | None] = [None] * SLOTS
        masters: dict[str, Endpoint] = {}
        try:
            for entry in reply:
                start, end, master = int(entry[0]), int(entry[1]), entry[2]
                name = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
                host = name if name not in ("", "?") else (asked.host or "127.0.0.1")
                port = int(master[1])
                address = f"{host}:{port}"
                if address not in masters:
                    masters[address] = self._seed.at(host, port)
                slots[start : end + 1] = [address] * (end - start + 1)
        except (IndexError, TypeError, ValueError, UnicodeDecodeError):
            raise PropagationError(
                f"{asked.address} sent a malformed CLUSTER SLOTS reply"
            ) from None
        return slots, masters
