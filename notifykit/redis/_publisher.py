"""Commands through one connection, with concurrent calls coalesced into pipelines.

``publish()`` encodes its ``PUBLISH`` commands (``execute()`` takes commands already encoded:
the history scripts' ``EVALSHA``, reads), queues them with a future and waits. One flusher task
takes *everything* queued, writes it in one go and reads the replies: while a batch is on the
wire the next one accumulates, so N concurrent publishers cost about one round trip per batch
instead of N. The queue is bounded (``max_pending_publishes`` calls); beyond that callers wait
for room. Every caller learns its own outcome: its replies, or a
:class:`~notifykit.errors.PropagationError` (never a redis-py exception).

The connection is opened on first use and again after any failure, and loads the publisher's
Lua ``scripts`` first (``SCRIPT LOAD``); a command answered ``NOSCRIPT`` (the server's script
cache was flushed) is sent once more after loading them again. A publish during an outage fails
after at most ``connect_timeout`` (connect) or ``command_timeout`` (write and replies).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from redis.exceptions import NoScriptError, ResponseError

from ..errors import PropagationError
from ._connection import close_quietly, open_connection, pack
from ._errors import PublishFailed, describe, map_redis_errors

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._connection import Endpoint, RedisConnection, Settings

__all__ = ["Publisher"]

logger = logging.getLogger("notifykit.redis")

_MAX_BATCH = 4096  # commands per pipeline
PARTS = 3
"""Every command is queued as three parts — head, payload, tail — so that a payload is
written as it is, never copied into a bigger buffer (a command with no payload has two empty
parts)."""


class _Job:
    """One call: its encoded commands, a label per command (for errors), its caller's future."""

    __slots__ = ("future", "labels", "parts")

    def __init__(
        self,
        parts: list[bytes],
        labels: Sequence[bytes],
        future: asyncio.Future[list[object]],
    ) -> None:
        self.parts = parts
        self.labels = labels
        self.future = future


class Publisher:
    """Sends commands to the Redis server at ``endpoint`` (``SPUBLISH`` when ``sharded``),
    loading ``scripts`` on every new connection."""

    def __init__(
        self,
        endpoint: Endpoint,
        settings: Settings,
        *,
        sharded: bool,
        scripts: Sequence[bytes] = (),
    ) -> None:
        self.endpoint = endpoint
        self._settings = settings
        self._command = b"*3\r\n$8\r\nSPUBLISH\r\n" if sharded else b"*3\r\n$7\r\nPUBLISH\r\n"
        self._load = [pack(b"SCRIPT", b"LOAD", script) for script in scripts]
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
        self.scripts_reloaded = 0

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
        if not channels:
            return
        head = self._command
        tail = b"$%d\r\n" % len(payload)
        parts: list[bytes] = []
        for channel in channels:
            parts.append(b"%b$%d\r\n%b\r\n%b" % (head, len(channel), channel, tail))
            parts.append(payload)
            parts.append(b"\r\n")
        async with self._room:
            replies = await self._submit(parts, channels)
        self._check(channels, replies)

    async def run(self, parts: list[bytes], labels: Sequence[bytes]) -> None:
        """Send commands already encoded (:data:`PARTS` parts each, one label each); raise
        :class:`~._errors.PublishFailed` naming the labels of those Redis refused."""
        self._check(labels, await self.execute(parts, labels))

    def _check(self, labels: Sequence[bytes], replies: list[object]) -> None:
        errors: list[tuple[bytes, ResponseError]] | None = None
        for index, reply in enumerate(replies):
            if isinstance(reply, ResponseError):
                if errors is None:
                    errors = []
                errors.append((labels[index], reply))
        if errors is not None:
            self.publish_errors += 1
            raise PublishFailed(self.endpoint.address, errors)

    async def execute(self, parts: list[bytes], labels: Sequence[bytes]) -> list[object]:
        """Send commands already encoded (:data:`PARTS` parts each, one label each) in the
        next pipeline; return their replies, a refusal as a ``ResponseError``. Raises
        :class:`~notifykit.errors.PropagationError` if the round trip failed."""
        async with self._room:
            return await self._submit(parts, labels)

    def _submit(self, parts: list[bytes], labels: Sequence[bytes]) -> asyncio.Future[list[object]]:
        """Queue one job (the caller holds room for it); its future gets the replies."""
        if self._task is None:  # closed, maybe while the caller waited for room
            raise PropagationError("the propagator is closed")
        future: asyncio.Future[list[object]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Job(parts, labels, future))
        self._wake.set()
        return future

    async def check(self) -> None:
        """Return once the connection is up, opening it if needed (no command is sent); raise
        :class:`~notifykit.errors.PropagationError` if Redis cannot be reached."""
        await self.execute([], ())

    COUNTERS = (
        "published",
        "publish_errors",
        "publish_batches",
        "publisher_connects",
        "scripts_reloaded",
    )
    """The names :meth:`counters` returns."""

    def counters(self) -> dict[str, int]:
        """This publisher's counters."""
        return {
            "published": self.published,
            "publish_errors": self.publish_errors,
            "publish_batches": self.publish_batches,
            "publisher_connects": self.publisher_connects,
            "scripts_reloaded": self.scripts_reloaded,
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
                count += len(job.labels)
            if jobs:
                await self._flush(jobs, parts, count)

    async def _send(self, parts: list[bytes], count: int) -> list[object]:
        """Write ``count`` commands and read their replies (a refusal is a reply); those
        answered ``NOSCRIPT`` are sent again after the scripts are loaded again."""
        with map_redis_errors("publish", self.endpoint.address):
            connection = await self._connect()
            if not parts:  # only a check() is waiting
                return []
            async with asyncio.timeout(self._settings.command_timeout):
                replies = await self._round_trip(connection, parts, count)
                missing = [i for i, reply in enumerate(replies) if type(reply) is NoScriptError]
                if missing and self._load:
                    self.scripts_reloaded += 1
                    again = [*self._load]
                    for index in missing:
                        again += parts[index * PARTS : (index + 1) * PARTS]
                    answers = await self._round_trip(
                        connection, again, len(self._load) + len(missing)
                    )
                    for index, reply in zip(missing, answers[len(self._load) :], strict=True):
                        replies[index] = reply
        return replies

    @staticmethod
    async def _round_trip(
        connection: RedisConnection, parts: list[bytes], count: int
    ) -> list[object]:
        await connection.send_packed_command(parts, check_health=False)
        read = connection.read_response
        replies: list[object] = []
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
            size = len(job.labels)
            if not job.future.done():
                job.future.set_result(replies[index : index + size])
            index += size

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
        if self._load:
            try:
                async with asyncio.timeout(self._settings.command_timeout):
                    loaded = await self._round_trip(connection, self._load, len(self._load))
            except BaseException:
                await close_quietly(connection)
                raise
            refused = next((r for r in loaded if isinstance(r, ResponseError)), None)
            if refused is not None:
                await close_quietly(connection)
                raise refused
        self.publisher_connects += 1
        self._connection = connection
        return connection

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await close_quietly(connection)
