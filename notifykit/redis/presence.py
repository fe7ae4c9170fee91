"""Cluster-wide presence in Redis or Redis Cluster, kept alive by per-instance heartbeats.

Asyncio only (redis-py's asyncio client). Data model, for prefix ``p`` and ``b`` =
``crc32(user_id) % 16``::

    p:presence:{b}:u:<user_id>   sorted set   "<instance_id>/<connection_id>" → expiry
    p:presence:{b}:online        sorted set   "<user_id>"                     → expiry

Scores are expiry times in milliseconds on the Redis clock; an entry whose expiry has passed is
dead, whoever reads it. Every instance rewrites the entries of its own connections every
``ttl / 3`` seconds (the heartbeat), with a new expiry of now + ``ttl``; an instance that dies
stops doing so, and its entries are dead ``ttl`` seconds later at most. The ``{b}`` hash tag puts
a user's key and the index that lists the user in the same slot of a Redis Cluster, so one
script removes a connection and, if it was the user's last live one, the user — atomically —
while the 16 indexes spread the load over the cluster's shards. See ``docs/presence.md``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import secrets
import time
import zlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..errors import ConfigurationError, PropagationError
from ._errors import CONNECTION_ERRORS, propagation_error

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping

__all__ = ["RedisPresence"]

logger = logging.getLogger("notifykit.redis.presence")

BUCKETS = 16
"""How many online indexes users are spread over. Part of the data layout: every instance
sharing a prefix must agree on it, so it is not a setting."""

_MEMBERS_PER_COMMAND = 1000  # members per ZADD/ZREM/EVAL: bounds command size and Lua's stack
_COMMANDS_PER_PIPELINE = 2000  # bounds the memory one pipeline holds
_PRUNE_EVERY = 3  # heartbeats between prunings of the users' keys (i.e. once per ttl)

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


def _bucket(user_id: str) -> int:
    return zlib.crc32(user_id.encode("utf-8", "surrogatepass")) % BUCKETS


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class RedisPresence:
    """:class:`~notifykit.protocols.Presence` shared by every instance using the same Redis
    (or Redis Cluster, with ``cluster=True``) and ``prefix``.

    ``instance_id`` names this instance in Redis (default: generated; it must not contain
    ``/``). ``ttl`` bounds how long the users of an instance that died without ``aclose()``
    still count as online; the heartbeat runs every ``ttl / 3``. ``timeout`` bounds one round
    trip to Redis (connecting included).

    ``is_online`` and ``connections_of`` are exact for live instances. ``online_users`` and
    ``online_count`` are exact too on one Redis and on a cluster alike, except that a user whose
    connections lived on a crashed instance still counts until their entries expire. While
    Redis is unreachable, calls raise :class:`~notifykit.errors.PropagationError` and
    ``healthy`` is False; the heartbeat keeps retrying (capped, jittered backoff) and, once Redis
    answers, registers every local connection again — even into an empty, restarted Redis.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "notifykit",
        instance_id: str | None = None,
        ttl: float = 30.0,
        cluster: bool = False,
        timeout: float = 5.0,
    ) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ConfigurationError("prefix must be a non-empty string without '{' or '}'")
        if instance_id is None:
            instance_id = secrets.token_hex(8)
        if not instance_id or "/" in instance_id:
            raise ConfigurationError("instance_id must be a non-empty string without '/'")
        if not (isinstance(ttl, int | float) and math.isfinite(ttl) and ttl > 0):
            raise ConfigurationError("ttl must be a finite number of seconds above 0")
        if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
            raise ConfigurationError("timeout must be a finite number of seconds above 0")
        parts = urlsplit(url)
        self._address = f"{parts.hostname or '?'}:{parts.port or 6379}"
        options: dict[str, Any] = {
            "decode_responses": True,
            "encoding_errors": "surrogatepass",
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 1),  # once: a pooled connection may predate a restart
        }
        client: Redis | RedisCluster
        try:
            client = (
                RedisCluster.from_url(url, **options) if cluster else Redis.from_url(url, **options)
            )
        except ValueError as exc:
            raise ConfigurationError(f"unusable Redis URL for presence: {exc}") from None
        self._client = client
        self._prefix = f"{prefix}:presence"
        self._clock_key = f"{self._prefix}:{{0}}:clock"  # never written; routes TIME
        self.instance_id = instance_id
        """This instance's name in Redis: the part before ``/`` in connection members."""
        self.ttl = float(ttl)
        """Seconds after which entries not refreshed by a heartbeat are dead."""
        self.heartbeat_interval = self.ttl / 3
        """Seconds between two heartbeats."""
        self._ttl_ms = round(self.ttl * 1000)
        self._timeout = float(timeout)
        self._state = "new"  # "new" → "running" → "closed"
        self._local: dict[str, set[str]] = {}
        self._local_connections = 0
        self._dirty: dict[str, set[str]] = {}  # connections touched since the last write
        self._batch: asyncio.Future[None] | None = None  # what callers of the next write await
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._first_beat = asyncio.Event()
        self._clock_offset: float | None = None  # Redis time (ms) minus monotonic time (ms)
        self._healthy = False
        self._heartbeats = 0
        self._heartbeat_failures = 0
        self._writes = 0
        self._write_failures = 0

    # -- keys and time -----------------------------------------------------------------------

    def _user_key(self, user_id: str, bucket: int) -> str:
        return f"{self._prefix}:{{{bucket}}}:u:{user_id}"

    def _index_key(self, bucket: int) -> str:
        return f"{self._prefix}:{{{bucket}}}:online"

    def _member(self, connection_id: str) -> str:
        return f"{self.instance_id}/{connection_id}"

    async def _sync_clock(self) -> float:
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

    async def _now_ms(self) -> int:
        """Now on the Redis clock, in milliseconds."""
        offset = self._clock_offset
        if offset is None:
            offset = await self._sync_clock()
        return int(time.monotonic() * 1000 + offset)

    def _error(self, action: str, exc: BaseException) -> PropagationError:
        return propagation_error(action, self._address, exc)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the heartbeat; a no-op if already started.

        Waits for the first heartbeat for up to ``timeout`` seconds, but never fails because
        Redis is unreachable: ``healthy`` stays False and the heartbeat keeps retrying.
        """
        if self._state == "closed":
            raise RuntimeError("this presence is closed")
        if self._state == "running":
            return
        self._state = "running"
        self._task = asyncio.create_task(
            self._run(), name=f"notifykit presence heartbeat ({self.instance_id})"
        )
        try:
            async with asyncio.timeout(self._timeout):
                await self._first_beat.wait()
        except TimeoutError:
            pass  # the heartbeat logged why; it keeps trying

    async def aclose(self) -> None:
        """Stop the heartbeat, remove every entry of this instance, and close the client.

        Idempotent. If Redis is unreachable, the entries are left to expire within ``ttl``
        (logged, not raised).
        """
        if self._state == "closed":
            return
        was_running = self._state == "running"
        self._state = "closed"
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            try:
                async with asyncio.timeout(self._timeout):
                    await asyncio.shield(self._task)
            except TimeoutError:
                self._task.cancel()
                await asyncio.wait([self._task])
        self._fail_batch(PropagationError("the presence was closed before the write"))
        if was_running:
            await self._remove_everything()
        self._local.clear()
        self._dirty.clear()
        self._local_connections = 0
        self._healthy = False
        await self._client.aclose()

    async def _remove_everything(self) -> None:
        users = self._local.keys() | self._dirty.keys()
        if not users:
            return
        try:
            async with asyncio.timeout(self._timeout):
                now = await self._now_ms()
                commands: list[tuple[Any, ...]] = []
                for user_id in users:
                    members = self._local.get(user_id, set()) | self._dirty.get(user_id, set())
                    commands.extend(self._remove_commands(user_id, members, now))
                await self._execute(commands)
        except CONNECTION_ERRORS as exc:
            logger.warning(
                "presence %s: could not remove its %d users from Redis at %s on close (%s); "
                "they expire within %.1f s",
                self.instance_id,
                len(users),
                self._address,
                exc,
                self.ttl,
            )

    def _check_running(self) -> None:
        if self._state != "running":
            raise RuntimeError(f"this presence is {self._state}: call start() first")

    @property
    def healthy(self) -> bool:
        """True once the last heartbeat reached Redis; False while Redis is unreachable."""
        return self._healthy

    def statistics(self) -> Mapping[str, int]:
        """``local_users``, ``local_connections``, ``heartbeats``, ``heartbeat_failures``,
        ``writes`` (round trips of batched connects and disconnects) and ``write_failures``."""
        return {
            "local_users": len(self._local),
            "local_connections": self._local_connections,
            "heartbeats": self._heartbeats,
            "heartbeat_failures": self._heartbeat_failures,
            "writes": self._writes,
            "write_failures": self._write_failures,
        }

    # -- recording connections ---------------------------------------------------------------

    async def connected(self, user_id: str, connection_id: str) -> None:
        """Record connection ``connection_id`` of ``user_id``; returns once Redis has it.

        Concurrent calls are written together, in one pipeline. If this raises
        :class:`~notifykit.errors.PropagationError`, the connection is still recorded here and
        the next successful heartbeat registers it.
        """
        self._check_running()
        connections = self._local.setdefault(user_id, set())
        if connection_id not in connections:
            connections.add(connection_id)
            self._local_connections += 1
        await self._submit(user_id, connection_id)

    async def disconnected(self, user_id: str, connection_id: str) -> None:
        """Forget connection ``connection_id`` of ``user_id``; returns once Redis has too.

        A no-op for a connection this instance does not hold, and after ``aclose()``. If this
        raises :class:`~notifykit.errors.PropagationError`, the entry expires within ``ttl``.
        """
        if self._state == "closed":
            return
        self._check_running()
        connections = self._local.get(user_id)
        if connections is None or connection_id not in connections:
            return
        connections.discard(connection_id)
        self._local_connections -= 1
        if not connections:
            del self._local[user_id]
        try:
            await self._submit(user_id, connection_id)
        except PropagationError:
            if self._state == "closed":
                return  # aclose() removed every entry of this instance anyway
            raise

    async def _submit(self, user_id: str, connection_id: str) -> None:
        """Mark a connection for the next write and wait for that write."""
        self._dirty.setdefault(user_id, set()).add(connection_id)
        batch = self._batch
        if batch is None:
            batch = self._batch = asyncio.get_running_loop().create_future()
            batch.add_done_callback(_consume)
        self._wake.set()
        await asyncio.shield(batch)

    def _fail_batch(self, exc: BaseException) -> None:
        batch, self._batch = self._batch, None
        if batch is not None and not batch.done():
            batch.set_exception(exc)

    # -- the writer: heartbeats and batched writes -------------------------------------------

    async def _run(self) -> None:
        """The one task that writes: a heartbeat every ``ttl / 3``, and in between whatever
        ``connected``/``disconnected`` marked, in one pipeline per wake-up."""
        loop = asyncio.get_running_loop()
        next_beat = loop.time()
        failures = 0
        try:
            while not self._stopping:
                delay = next_beat - loop.time()
                if delay > 0 and not self._wake.is_set():
                    try:
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                if self._stopping:
                    break
                self._wake.clear()
                full = loop.time() >= next_beat
                batch, self._batch = self._batch, None
                dirty, self._dirty = self._dirty, {}
                try:
                    await self._write(dirty, full=full)
                except Exception as exc:
                    failures += 1
                    self._note_failure(exc, full=full, failures=failures)
                    # Retry the heartbeat soon: it re-registers whatever this write missed.
                    retry_at = loop.time() + _backoff(failures, self.heartbeat_interval)
                    next_beat = retry_at if full else min(next_beat, retry_at)
                    if batch is not None:
                        if not isinstance(exc, PropagationError):
                            exc = PropagationError(f"presence write failed: {exc!r}")
                        batch.set_exception(exc)
                else:
                    if full:
                        if not self._healthy and self._heartbeats:
                            logger.info(
                                "presence %s: Redis at %s is back; registered %d connections",
                                self.instance_id,
                                self._address,
                                self._local_connections,
                            )
                        self._healthy = True
                        self._heartbeats += 1
                        failures = 0
                        next_beat = loop.time() + self.heartbeat_interval
                    if batch is not None:
                        batch.set_result(None)
                if full:
                    self._first_beat.set()
        finally:
            self._first_beat.set()
            self._fail_batch(PropagationError("the presence was closed before the write"))

    def _note_failure(self, exc: BaseException, *, full: bool, failures: int) -> None:
        was_healthy, self._healthy = self._healthy, False
        if full:
            self._heartbeat_failures += 1
        else:
            self._write_failures += 1
        if isinstance(exc, PropagationError):
            # Heartbeats are logged every time (at most every ttl / 3 once backed off); a
            # failed write is raised to its callers, so it is only logged when it is news.
            level = logging.WARNING if full or was_healthy else logging.DEBUG
            logger.log(
                level,
                "presence %s: %s failed (%d in a row): %s",
                self.instance_id,
                "heartbeat" if full else "write",
                failures,
                exc,
            )
        else:
            logger.error(
                "presence %s: unexpected error in a %s",
                self.instance_id,
                "heartbeat" if full else "write",
                exc_info=exc,
            )

    async def _write(self, dirty: dict[str, set[str]], *, full: bool) -> None:
        """One heartbeat (``full``: every local connection) or one batch of marked changes."""
        try:
            if full:
                await self._sync_clock()
            now = await self._now_ms()
        except CONNECTION_ERRORS as exc:
            raise self._error("read the Redis clock", exc) from exc
        expiry = now + self._ttl_ms
        commands: list[tuple[Any, ...]] = []
        if full:
            adds: dict[str, Collection[str]] = dict(self._local)
        else:
            adds = {}
        for user_id, touched in dirty.items():
            live = self._local.get(user_id, ())
            gone = [c for c in touched if c not in live]
            if gone:
                commands.extend(self._remove_commands(user_id, gone, now))
            if not full:
                added = [c for c in touched if c in live]
                if added:
                    adds[user_id] = added
        commands[:0] = self._add_commands(adds, expiry)
        if full:
            for bucket in range(BUCKETS):
                commands.append(("ZREMRANGEBYSCORE", self._index_key(bucket), "-inf", now))
            if self._heartbeats % _PRUNE_EVERY == 0:
                for user_id in self._local:
                    key = self._user_key(user_id, _bucket(user_id))
                    commands.append(("ZREMRANGEBYSCORE", key, "-inf", now))
        if not commands:
            return
        if not full:
            self._writes += 1
        try:
            await self._execute(commands)
        except CONNECTION_ERRORS as exc:
            raise self._error("write presence", exc) from exc

    def _add_commands(
        self, adds: Mapping[str, Collection[str]], expiry: int
    ) -> list[tuple[Any, ...]]:
        """ZADD each user's connections and the user to their index, with a new expiry.

        A user's key and index entry are written in this order, and in one slot: a concurrent
        removal script on another instance runs wholly before or after, never in between."""
        commands: list[tuple[Any, ...]] = []
        key_ttl = self._ttl_ms + round(self.heartbeat_interval * 1000)
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

    def _remove_commands(
        self, user_id: str, connection_ids: Iterable[str], now: int
    ) -> list[tuple[Any, ...]]:
        bucket = _bucket(user_id)
        keys = (self._user_key(user_id, bucket), self._index_key(bucket))
        members = [self._member(c) for c in connection_ids]
        return [
            ("EVAL", _REMOVE_SCRIPT, 2, *keys, now, user_id, *chunk)
            for chunk in _chunks(members, _MEMBERS_PER_COMMAND)
        ]

    async def _execute(self, commands: list[tuple[Any, ...]]) -> None:
        for start in range(0, len(commands), _COMMANDS_PER_PIPELINE):
            pipe = self._client.pipeline(transaction=False)
            for command in commands[start : start + _COMMANDS_PER_PIPELINE]:
                pipe.execute_command(*command)
            await pipe.execute()

    # -- reading -----------------------------------------------------------------------------

    async def is_online(self, user_id: str) -> bool:
        """True if ``user_id`` has a live connection on any instance (one round trip)."""
        self._check_running()
        try:
            now = await self._now_ms()
            key = self._user_key(user_id, _bucket(user_id))
            count = await self._client.execute_command("ZCOUNT", key, f"({now}", "+inf")
        except CONNECTION_ERRORS as exc:
            raise self._error("read presence", exc) from exc
        return int(count) > 0

    async def connections_of(self, user_id: str) -> list[str]:
        """The ids of ``user_id``'s live connections on every instance (one round trip)."""
        self._check_running()
        try:
            now = await self._now_ms()
            key = self._user_key(user_id, _bucket(user_id))
            members = await self._client.execute_command("ZRANGEBYSCORE", key, f"({now}", "+inf")
        except CONNECTION_ERRORS as exc:
            raise self._error("read presence", exc) from exc
        seen: dict[str, None] = {}
        for member in members:
            seen[str(member).partition("/")[2]] = None
        return list(seen)

    async def online_count(self) -> int:
        """How many users have a live connection anywhere (one pipeline of 16 ZCOUNTs)."""
        self._check_running()
        return sum(await self._counts())

    async def _counts(self) -> list[int]:
        try:
            now = await self._now_ms()
            pipe = self._client.pipeline(transaction=False)
            for bucket in range(BUCKETS):
                pipe.execute_command("ZCOUNT", self._index_key(bucket), f"({now}", "+inf")
            counts = await pipe.execute()
        except CONNECTION_ERRORS as exc:
            raise self._error("read presence", exc) from exc
        return [int(count) for count in counts]

    async def online_users(self, limit: int = 10_000) -> list[str]:
        """Up to ``limit`` users with a live connection anywhere (two round trips: count the
        indexes, then read from each no more than its share)."""
        self._check_running()
        if limit <= 0:
            return []
        counts = await self._counts()
        try:
            now = await self._now_ms()
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
        except CONNECTION_ERRORS as exc:
            raise self._error("read presence", exc) from exc
        users = [str(user) for result in results for user in result]
        return users[:limit]


def _backoff(failures: int, cap: float) -> float:
    """Capped exponential backoff with full jitter, from 50 ms."""
    return random.uniform(0, min(cap, 0.05 * 2 ** min(failures, 16)))


def _consume(future: asyncio.Future[None]) -> None:
    """Mark a batch's exception as retrieved: its callers may all have been cancelled."""
    if not future.cancelled():
        future.exception()
