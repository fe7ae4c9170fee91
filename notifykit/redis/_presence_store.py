"""The presence data in Redis: its key layout, its scripts, the Redis clock, and the commands
that read and write it.

:class:`PresenceStore` knows *what* to send for one instance; when to send it (heartbeats,
batching, lifecycle) is :class:`~notifykit.redis.RedisPresence`'s business. The data model is
drawn in :mod:`notifykit.redis.presence` and ``docs/presence.md``.
"""

from __future__ import annotations

import time
import zlib
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping

    from redis.asyncio import Redis, RedisCluster

__all__ = ["BUCKETS", "Command", "PresenceStore"]

BUCKETS = 16
"""How many online indexes users are spread over. Part of the data layout: every instance
sharing a prefix must agree on it, so it is not a setting."""

_MEMBERS_PER_COMMAND = 1000  # members per ZADD/ZREM/EVAL: bounds command size and Lua's stack
_COMMANDS_PER_PIPELINE = 2000  # bounds the memory one pipeline holds

# KEYS: user key, online index. ARGV: now (ms), user id, then connection members to remove.
# Removes the members and dead entries; if no live member is left, the user leaves the index.
_REMOVE_SCRIPT = """
if #ARGV > 2 then redis.call('ZREM', KEYS[1], unpack(ARGV, 3)) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf') == 0 then
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return 0
"""

# KEYS: any key (it only routes the script to one fixed node of a cluster). Returns TIME.
_TIME_SCRIPT = "return redis.call('TIME')"

Command: TypeAlias = tuple[Any, ...]
"""One Redis command with its arguments, as ``execute_command`` takes it."""


def _bucket(user_id: str) -> int:
    return zlib.crc32(user_id.encode("utf-8", "surrogatepass")) % BUCKETS


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class PresenceStore:
    """The presence entries of instance ``instance_id`` under ``prefix`` (already ending in
    ``:presence``), through ``client``, which the caller owns (and closes).

    Entries written live ``ttl_ms``; a user's key itself expires ``key_ttl_ms`` after its last
    write. The ``async`` methods raise what redis-py raises: the caller,
    :class:`~notifykit.redis.RedisPresence`, translates it at its boundary.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        prefix: str,
        instance_id: str,
        ttl_ms: int,
        key_ttl_ms: int,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._clock_key = f"{prefix}:{{0}}:clock"  # never written; routes TIME
        self._instance_id = instance_id
        self._ttl_ms = ttl_ms
        self._key_ttl_ms = key_ttl_ms
        self._clock_offset: float | None = None  # Redis time (ms) minus monotonic time (ms)

    # -- keys and time -----------------------------------------------------------------------

    def _user_key(self, user_id: str, bucket: int) -> str:
        return f"{self._prefix}:{{{bucket}}}:u:{user_id}"

    def _index_key(self, bucket: int) -> str:
        return f"{self._prefix}:{{{bucket}}}:online"

    def _member(self, connection_id: str) -> str:
        return f"{self._instance_id}/{connection_id}"

    async def sync_clock(self) -> float:
        """Measure (one round trip), remember and return the offset between the Redis clock
        and ours. Every instance so reads the same clock, whatever its own says."""
        before = time.monotonic()
        seconds, micros = await self._client.execute_command(
            "EVAL", _TIME_SCRIPT, 1, self._clock_key
        )
        after = time.monotonic()
        redis_ms = int(seconds) * 1000 + int(micros) / 1000
        offset = self._clock_offset = redis_ms - (before + after) * 500
        return offset

    async def now_ms(self) -> int:
        """Now on the Redis clock, in milliseconds."""
        offset = self._clock_offset
        if offset is None:
            offset = await self.sync_clock()
        return int(time.monotonic() * 1000 + offset)

    # -- writing -----------------------------------------------------------------------------

    def write_commands(
        self,
        local: Mapping[str, Collection[str]],
        dirty: Mapping[str, Collection[str]],
        now: int,
        *,
        full: bool,
        prune: bool,
    ) -> list[Command]:
        """The commands of one heartbeat (``full``: every connection in ``local``) or one batch
        of the connections in ``dirty``: those still in ``local`` are added, the others removed.

        A heartbeat also drops dead users from the indexes and, if ``prune``, dead members from
        the keys of the users in ``local``."""
        expiry = now + self._ttl_ms
        commands: list[Command] = []
        if full:
            adds: dict[str, Collection[str]] = dict(local)
        else:
            adds = {}
        for user_id, touched in dirty.items():
            live = local.get(user_id, ())
            gone = [c for c in touched if c not in live]
            if gone:
                commands.extend(self.remove_commands(user_id, gone, now))
            if not full:
                added = [c for c in touched if c in live]
                if added:
                    adds[user_id] = added
        commands[:0] = self._add_commands(adds, expiry)
        if full:
            for bucket in range(BUCKETS):
                commands.append(("ZREMRANGEBYSCORE", self._index_key(bucket), "-inf", now))
            if prune:
                for user_id in local:
                    key = self._user_key(user_id, _bucket(user_id))
                    commands.append(("ZREMRANGEBYSCORE", key, "-inf", now))
        return commands

    def _add_commands(self, adds: Mapping[str, Collection[str]], expiry: int) -> list[Command]:
        """ZADD each user's connections and the user to their index, with a new expiry.

        A user's key and index entry are written in this order, and in one slot: a concurrent
        removal script on another instance runs wholly before or after, never in between."""
        commands: list[Command] = []
        key_ttl = self._key_ttl_ms
        by_bucket: dict[int, list[str]] = {}
        for user_id, connection_ids in adds.items():
            bucket = _bucket(user_id)
            key = self._user_key(user_id, bucket)
            members = [self._member(c) for c in connection_ids]
            for chunk in _chunks(members, _MEMBERS_PER_COMMAND):
                scored: list[Any] = []
                for member in chunk:
                    scored += (expiry, member)
                commands.append(("ZADD", key, *scored))
            commands.append(("PEXPIRE", key, key_ttl))
            by_bucket.setdefault(bucket, []).append(user_id)
        for bucket, user_ids in by_bucket.items():
            for chunk in _chunks(user_ids, _MEMBERS_PER_COMMAND):
                scored = []
                for user_id in chunk:
                    scored += (expiry, user_id)
                commands.append(("ZADD", self._index_key(bucket), *scored))
        return commands

    def remove_commands(
        self, user_id: str, connection_ids: Iterable[str], now: int
    ) -> list[Command]:
        """Remove ``connection_ids`` of ``user_id`` and, if none of theirs is left alive, the
        user from their index (one script per chunk, atomic in the user's slot)."""
        bucket = _bucket(user_id)
        keys = (self._user_key(user_id, bucket), self._index_key(bucket))
        members = [self._member(c) for c in connection_ids]
        return [
            ("EVAL", _REMOVE_SCRIPT, 2, *keys, now, user_id, *chunk)
            for chunk in _chunks(members, _MEMBERS_PER_COMMAND)
        ]

    async def execute(self, commands: list[Command]) -> None:
        """Send ``commands`` in pipelines (not transactions) of bounded size."""
        for start in range(0, len(commands), _COMMANDS_PER_PIPELINE):
            pipe = self._client.pipeline(transaction=False)
            for command in commands[start : start + _COMMANDS_PER_PIPELINE]:
                pipe.execute_command(*command)
            await pipe.execute()

    # -- reading -----------------------------------------------------------------------------

    async def is_online(self, user_id: str) -> bool:
        """True if ``user_id`` has a live connection on any instance (one round trip)."""
        now = await self.now_ms()
        key = self._user_key(user_id, _bucket(user_id))
        count = await self._client.execute_command("ZCOUNT", key, f"({now}", "+inf")
        return int(count) > 0

    async def connections_of(self, user_id: str) -> list[str]:
        """The ids of ``user_id``'s live connections on every instance (one round trip)."""
        now = await self.now_ms()
        key = self._user_key(user_id, _bucket(user_id))
        members = await self._client.execute_command("ZRANGEBYSCORE", key, f"({now}", "+inf")
        seen: dict[str, None] = {}
        for member in members:
            seen[str(member).partition("/")[2]] = None
        return list(seen)

    async def counts(self) -> list[int]:
        """How many live users each index lists (one pipeline of :data:`BUCKETS` ZCOUNTs)."""
        now = await self.now_ms()
        pipe = self._client.pipeline(transaction=False)
        for bucket in range(BUCKETS):
            pipe.execute_command("ZCOUNT", self._index_key(bucket), f"({now}", "+inf")
        counts = await pipe.execute()
        return [int(count) for count in counts]

    async def online_users(self, limit: int) -> list[str]:
        """Up to ``limit`` (above 0) live users (two round trips: count the indexes, then read
        from each no more than its share)."""
        counts = await self.counts()
        now = await self.now_ms()
        pipe = self._client.pipeline(transaction=False)
        remaining = limit
        for bucket, count in enumerate(counts):
            take = min(count, remaining)
            if take <= 0:
                continue
            remaining -= take
            key = self._index_key(bucket)
            pipe.execute_command("ZRANGEBYSCORE", key, f"({now}", "+inf", "LIMIT", 0, take)
        results = await pipe.execute() if remaining < limit else []
        users = [str(user) for result in results for user in result]
        return users[:limit]
