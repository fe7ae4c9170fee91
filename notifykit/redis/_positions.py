"""Fresh positions, read once per key for every connect of one event-loop pass.

A connection that joins with no position to resume from needs only each stream's current
position (epoch, last offset), and every connection reads those of ``"auth"`` and ``"all"``.
:class:`FreshReads` collects such reads for one pass of the event loop and runs one read for
all of them: a storm of connects reads ``"all"`` once per pass instead of once per connect.

Sharing is safe because a read is only ever joined before its command is written: each caller
started holding its live messages before it asked, so the position the shared read returns is
as good for it as one of its own.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..errors import PropagationError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Mapping

    from ..model import StreamHistory

__all__ = ["FreshReads"]


class FreshReads:
    """Batches reads with no offset (``read(dict.fromkeys(keys), 0)``) per event-loop pass.

    ``read`` is the propagator's own read; :meth:`get` returns what it returned for ``keys``, or
    raises what it raised (a failed batch is read again for each caller alone, so that a key
    Redis refuses fails only the connections that asked for it).
    """

    __slots__ = ("_batch", "_closed", "_read", "_tasks")

    def __init__(
        self, read: Callable[[Mapping[str, int | None], int], Awaitable[dict[str, StreamHistory]]]
    ) -> None:
        self._read = read
        self._batch: tuple[set[str], asyncio.Future[dict[str, StreamHistory]]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def get(self, keys: Collection[str]) -> dict[str, StreamHistory]:
        """The current position of each of ``keys``' streams, read with the pass's others."""
        batch = self._batch
        if batch is None:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieve)
            batch = self._batch = (set(), future)
            task = asyncio.create_task(self._flush(batch))  # runs on the next pass
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        batch[0].update(keys)
        try:
            found = await asyncio.shield(batch[1])  # one caller's cancellation spares the others
        except PropagationError:
            if self._closed or batch[0].issubset(keys):
                raise
            # another caller's key may be the one Redis refused (an ACL): read ours alone
            found = await self._read(dict.fromkeys(keys), 0)
        return {key: found[key] for key in keys}

    async def _flush(
        self, batch: tuple[set[str], asyncio.Future[dict[str, StreamHistory]]]
    ) -> None:
        self._batch = None  # later callers start the next batch: this one is being written
        keys, future = batch
        try:
            found = await self._read(dict.fromkeys(keys), 0)
        except asyncio.CancelledError:  # closing: the callers must not look cancelled
            if not future.done():
                future.set_exception(PropagationError("the propagator is closing"))
            raise
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(found)

    async def aclose(self) -> None:
        """Cancel the reads in flight (their callers get
        :class:`~notifykit.errors.PropagationError`)."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _retrieve(future: asyncio.Future[dict[str, StreamHistory]]) -> None:
    """Mark an exception retrieved: every caller may have gone (cancelled) before it came."""
    if not future.cancelled():
        future.exception()
