"""Publishing through one connection, with concurrent calls coalesced into pipelines.

``publish()`` encodes its ``PUBLISH`` commands, queues them with a future and waits. One flusher
task takes *everything* queued, writes it in one go and reads the replies: while a batch is on
the wire the next one accumulates, so N concurrent publishers cost about one round trip per
batch instead of N. The queue is bounded (``max_pending_publishes`` calls); beyond that callers
wait for room. Every caller learns its own outcome: success, or a
:class:`~notifykit.errors.PropagationError` (never a redis-py exception).

The connection is opened on first use and again after any failure; a publish during an outage
fails after at most ``connect_timeout`` (connect) or ``command_timeout`` (write and replies).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from redis.exceptions import ResponseError

from ..errors import PropagationError
from ._connection import close_quietly, open_connection
from ._errors import PublishFailed, describe, map_redis_errors

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._connection import Endpoint, RedisConnection, Settings

__all__ = ["Publisher"]

logger = logging.getLogger("notifykit.redis")

_MAX_BATCH = 4096  # commands per pipeline


class _Job:
    """One ``publish()`` call: its encoded commands, its channels, its caller's future."""

    __slots__ = ("channels", "future", "parts")

    def __init__(
        self, parts: list[bytes], channels: Sequence[bytes], future: asyncio.Future[None]
    ) -> None:
        self.parts = parts
        self.channels = channels
        self.future = future


class Publisher:
    """Publishes to the Redis server at ``endpoint`` (``SPUBLISH`` when ``sharded``)."""

    def __init__(self, endpoint: Endpoint, settings: Settings, *, sharded: bool) -> None:
        self.endpoint = endpoint
        self._settings = settings
        self._command = b"*3\r\n$8\r\nSPUBLISH\r\n" if sharded else b"*3\r\n$7\r\nPUBLISH\r\n"
        self._queue: deque[_Job] = deque()
        self._room = asyncio.Semaphore(settings.max_pending_publishes)
        self._wake = asyncio.Event()
        self._connection: RedisConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.published = 0
        self.publish_errors = 0
        self.publish_batches = 0
        self.publisher_connects = 0

    def start(self) -> None:
        """Start the flusher task."""
        self._task = asyncio.create_task(
            self._run(), name=f"notifykit-redis-publisher-{self.endpoint.address}"
        )

    async def aclose(self) -> None:
        """Stop the flusher, fail whatever is still queued, close the connection. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                logger.error("publisher task failed", exc_info=task.exception())
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.set_exception(PropagationError("the propagator is closed"))
        connection, self._connection = self._connection, None
        if connection is not None:
            await close_quietly(connection)

    async def publish(self, channels: Sequence[bytes], payload: bytes) -> None:
        """Publish ``payload`` to every channel in ``channels``, in one pipeline with whatever
        else is queued; raise :class:`~notifykit.errors.PropagationError` if any failed."""
        if self._task is None:
            raise PropagationError("the propagator is closed")
        if not channels:
            return
        head = self._command
        tail = b"$%d\r\n" % len(payload)
        parts: list[bytes] = []
        for channel in channels:
            parts.append(b"%b$%d\r\n%b\r\n%b" % (head, len(channel), channel, tail))
            parts.append(payload)
            parts.append(b"\r\n")
        future = asyncio.get_running_loop().create_future()
        async with self._room:
            if self._task is None:  # closed while this call waited for room
                raise PropagationError("the propagator is closed")
            self._queue.append(_Job(parts, channels, future))
            self._wake.set()
            await future

    async def check(self) -> None:
        """Return once the connection is up, opening it if needed (no command is sent); raise
        :class:`~notifykit.errors.PropagationError` if Redis cannot be reached."""
        if self._task is None:
            raise PropagationError("the propagator is closed")
        future = asyncio.get_running_loop().create_future()
        async with self._room:
            if self._task is None:
                raise PropagationError("the propagator is closed")
            self._queue.append(_Job([], (), future))
            self._wake.set()
            await future

    COUNTERS = ("published", "publish_errors", "publish_batches", "publisher_connects")
    """The names :meth:`counters` returns."""

    def counters(self) -> dict[str, int]:
        """This publisher's counters."""
        return {
            "published": self.published,
            "publish_errors": self.publish_errors,
            "publish_batches": self.publish_batches,
            "publisher_connects": self.publisher_connects,
        }

    async def _run(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            jobs: list[_Job] = []
            parts: list[bytes] = []
            count = 0
            while queue and count < _MAX_BATCH:
                job = queue.popleft()
                if job.future.done():  # its caller gave up before it was sent
                    continue
                jobs.append(job)
                parts += job.parts
                count += len(job.channels)
            if jobs:
                await self._flush(jobs, parts, count)

    async def _send(self, parts: list[bytes], count: int) -> list[object]:
        """Write ``count`` commands and read their replies (a refusal is a reply)."""
        replies: list[object] = []
        with map_redis_errors("publish", self.endpoint.address):
            connection = await self._connect()
            if not parts:  # only a check() is waiting
                return replies
            async with asyncio.timeout(self._settings.command_timeout):
                await connection.send_packed_command(parts, check_health=False)
                read = connection.read_response
                for _ in range(count):
                    try:
                        replies.append(await read())
                    except ResponseError as exc:
                        replies.append(exc)
        return replies

    async def _flush(self, jobs: list[_Job], parts: list[bytes], count: int) -> None:
        try:
            replies = await self._send(parts, count)
        except Exception as exc:  # the flusher must outlive anything, even a bug
            await self._drop()
            self.publish_errors += len(jobs)
            address = self.endpoint.address
            if isinstance(exc, PropagationError):
                message, cause = str(exc), exc.__cause__ or exc
                if not self._failing:
                    logger.warning("publishing to Redis at %s failed: %s", address, describe(cause))
            else:  # a bug: say so loudly, and still answer every caller
                message, cause = f"could not publish (Redis at {address}): {describe(exc)}", exc
                logger.error("publishing to Redis at %s failed", address, exc_info=exc)
            self._failing = True
            for job in jobs:
                if not job.future.done():
                    error = PropagationError(message)
                    error.__cause__ = cause
                    job.future.set_exception(error)
            return
        if self._failing:
            self._failing = False
            logger.info("publishing to Redis at %s works again", self.endpoint.address)
        if count:
            self.publish_batches += 1
            self.published += count
        index = 0
        for job in jobs:
            errors: list[tuple[bytes, ResponseError]] | None = None
            for channel in job.channels:
                reply = replies[index]
                index += 1
                if isinstance(reply, ResponseError):
                    if errors is None:
                        errors = []
                    errors.append((channel, reply))
            if job.future.done():
                continue
            if errors is None:
                job.future.set_result(None)
            else:
                self.publish_errors += 1
                job.future.set_exception(PublishFailed(self.endpoint.address, errors))

    async def _connect(self) -> RedisConnection:
        connection = self._connection
        if connection is not None:
            # An idle connection the server closed (``timeout`` config, restart) shows EOF.
            if connection.is_connected and not await connection.can_read():
                return connection
            await self._drop()
        connection = await open_connection(
            self.endpoint, self._settings, "pub", socket_timeout=None
        )
        self.publisher_connects += 1
        self._connection = connection
        return connection

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await close_quietly(connection)
