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
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..errors import ConfigurationError, PropagationError
from ._errors import map_redis_errors
from ._presence_store import BUCKETS as BUCKETS
from ._presence_store import PresenceStore

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._presence_store import Command

__all__ = ["RedisPresence"]

logger = logging.getLogger("notifykit.redis.presence")

_PRUNE_EVERY = 3  # heartbeats between prunings of the users' keys (i.e. once per ttl)


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
        self.instance_id = instance_id
        """This instance's name in Redis: the part before ``/`` in connection members."""
        self.ttl = float(ttl)
        """Seconds after which entries not refreshed by a heartbeat are dead."""
        self.heartbeat_interval = self.ttl / 3
        """Seconds between two heartbeats."""
        ttl_ms = round(self.ttl * 1000)
        self._store = PresenceStore(
            client,
            prefix=f"{prefix}:presence",
            instance_id=instance_id,
            ttl_ms=ttl_ms,
            key_ttl_ms=ttl_ms + round(self.heartbeat_interval * 1000),
        )
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
        self._healthy = False
        self._heartbeats = 0
        self._heartbeat_failures = 0
        self._writes = 0
        self._write_failures = 0

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
            with map_redis_errors("remove presence", self._address):
                async with asyncio.timeout(self._timeout):
                    now = await self._store.now_ms()
                    commands: list[Command] = []
                    for user_id in users:
                        members = self._local.get(user_id, set()) | self._dirty.get(user_id, set())
                        commands.extend(self._store.remove_commands(user_id, members, now))
                    await self._store.execute(commands)
        except PropagationError as exc:
            logger.warning(
                "presence %s: on close, %s; its %d users expire within %.1f s",
                self.instance_id,
                exc,
                len(users),
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
        store = self._store
        with map_redis_errors("write presence", self._address):
            if full:
                await store.sync_clock()
            now = await store.now_ms()
            prune = full and self._heartbeats % _PRUNE_EVERY == 0
            commands = store.write_commands(self._local, dirty, now, full=full, prune=prune)
            if not commands:
                return
            if not full:
                self._writes += 1
            await store.execute(commands)

    # -- reading -----------------------------------------------------------------------------

    async def is_online(self, user_id: str) -> bool:
        """True if ``user_id`` has a live connection on any instance (one round trip)."""
        self._check_running()
        with map_redis_errors("read presence", self._address):
            return await self._store.is_online(user_id)

    async def connections_of(self, user_id: str) -> list[str]:
        """The ids of ``user_id``'s live connections on every instance (one round trip)."""
        self._check_running()
        with map_redis_errors("read presence", self._address):
            return await self._store.connections_of(user_id)

    async def online_count(self) -> int:
        """How many users have a live connection anywhere (one pipeline of 16 ZCOUNTs)."""
        self._check_running()
        with map_redis_errors("read presence", self._address):
            return sum(await self._store.counts())

    async def online_users(self, limit: int = 10_000) -> list[str]:
        """Up to ``limit`` users with a live connection anywhere (two round trips: count the
        indexes, then read from each no more than its share)."""
        self._check_running()
        if limit <= 0:
            return []
        with map_redis_errors("read presence", self._address):
            return await self._store.online_users(limit)


def _backoff(failures: int, cap: float) -> float:
    """Capped exponential backoff with full jitter, from 50 ms."""
    return random.uniform(0, min(cap, 0.05 * 2 ** min(failures, 16)))


def _consume(future: asyncio.Future[None]) -> None:
    """Mark a batch's exception as retrieved: its callers may all have been cancelled."""
    if not future.cancelled():
        future.exception()
