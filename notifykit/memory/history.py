"""In-memory history: per-stream offsets, epochs and retained payloads, bounded everywhere.

A stream is a routing key's history: offsets 1, 2, 3, ... with no holes, and an epoch (eight
random hex digits) that names this incarnation of it. A stream forgotten — evicted to stay
within the bounds, idle for longer than the ttl, or lost with the process — comes back with a
new epoch, so a position from before can never be mistaken for a current one.

Bounds: ``size`` entries per stream, entries no older than ``ttl`` seconds, at most
``max_streams`` streams and ``max_bytes`` of payloads in all; the least recently used streams
go first.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from itertools import islice
from typing import TYPE_CHECKING

from ..envelope import stamp
from ..errors import ConfigurationError
from ..model import StreamHistory
from ..wire import Position

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["DEFAULT_HISTORY_SIZE", "DEFAULT_HISTORY_TTL", "MemoryHistory", "new_epoch"]

DEFAULT_HISTORY_SIZE = 100
"""Entries kept per stream when nothing else is configured."""
DEFAULT_HISTORY_TTL = 3600.0
"""Seconds an entry (and an idle stream) is kept when nothing else is configured."""


def new_epoch() -> str:
    """A fresh epoch: eight random hex digits."""
    return secrets.token_hex(4)


class _Stream:
    __slots__ = ("bytes", "entries", "epoch", "last", "touched")

    def __init__(self, now: float) -> None:
        self.epoch = new_epoch()
        self.last = 0
        self.entries: deque[tuple[int, float, bytes]] = deque()
        self.bytes = 0
        self.touched = now


class MemoryHistory:
    """Per-stream history in memory (see the module docstring). Not thread-safe: all calls
    happen on the event loop; every call is O(1) amortized and never waits."""

    def __init__(
        self,
        *,
        size: int = DEFAULT_HISTORY_SIZE,
        ttl: float = DEFAULT_HISTORY_TTL,
        max_streams: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(size, int) or size < 1:
            raise ConfigurationError(f"history size must be at least 1, not {size!r}")
        if not ttl > 0:
            raise ConfigurationError(f"history ttl must be seconds above 0, not {ttl!r}")
        if max_streams < 1 or max_bytes < 1:
            raise ConfigurationError("max_streams and max_bytes must be at least 1")
        self.size = size
        self.ttl = float(ttl)
        self.max_streams = max_streams
        self.max_bytes = max_bytes
        self._clock = clock
        self._streams: OrderedDict[str, _Stream] = OrderedDict()
        self._bytes = 0
        self._entries = 0
        self._evicted = 0

    def append(self, key: str, payload: bytes) -> bytes:
        """Append ``payload`` to ``key``'s stream; return it stamped with its position."""
        now = self._clock()
        stream = self._stream(key, now)
        stream.last += 1
        stamped = stamp(payload, Position(stream.epoch, stream.last))
        stream.entries.append((stream.last, now, stamped))
        self._entries += 1
        stream.bytes += len(stamped)
        self._bytes += len(stamped)
        if len(stream.entries) > self.size:
            self._drop_oldest(stream)
        self._expire(stream, now)
        self._bound(keep=key)
        return stamped

    def read(self, key: str, after: int | None, limit: int) -> StreamHistory:
        """``key``'s stream now, with up to ``limit`` entries after offset ``after`` (none for
        None); a stream that does not exist yet is created (offset 0, a new epoch)."""
        now = self._clock()
        stream = self._stream(key, now)
        self._expire(stream, now)
        self._bound(keep=key)
        entries = stream.entries
        first = entries[0][0] if entries else stream.last + 1
        taken: tuple[tuple[int, bytes], ...] = ()
        if after is not None and limit > 0:
            wanted = ((offset, payload) for offset, _, payload in entries if offset > after)
            taken = tuple(islice(wanted, limit))
        complete = after is None or stream.last <= max(after, taken[-1][0] if taken else 0)
        return StreamHistory(stream.epoch, stream.last, first, taken, complete)

    def _stream(self, key: str, now: float) -> _Stream:
        streams = self._streams
        stream = streams.get(key)
        if stream is not None and now - stream.touched > self.ttl:
            self._forget(key)  # idle beyond the ttl: its history is over
            stream = None
        if stream is None:
            stream = streams[key] = _Stream(now)
        else:
            streams.move_to_end(key)
        stream.touched = now
        return stream

    def _drop_oldest(self, stream: _Stream) -> None:
        self._entries -= 1
        size = len(stream.entries.popleft()[2])
        stream.bytes -= size
        self._bytes -= size

    def _expire(self, stream: _Stream, now: float) -> None:
        entries, cutoff = stream.entries, now - self.ttl
        while entries and entries[0][1] < cutoff:
            self._drop_oldest(stream)

    def _bound(self, keep: str) -> None:
        """Forget the least recently used streams (never ``keep``) beyond the bounds."""
        streams = self._streams
        while len(streams) > self.max_streams or self._bytes > self.max_bytes:
            oldest = next(iter(streams))
            if oldest == keep:
                if len(streams) == 1:
                    return
                streams.move_to_end(keep)
                continue
            self._forget(oldest)
            self._evicted += 1

    def _forget(self, key: str) -> None:
        stream = self._streams.pop(key)
        self._bytes -= stream.bytes
        self._entries -= len(stream.entries)

    def statistics(self) -> Mapping[str, int]:
        """``streams`` and ``entries`` held, their ``bytes``, and streams ``evicted`` so far."""
        return {
            "streams": len(self._streams),
            "entries": self._entries,
            "bytes": self._bytes,
            "evicted": self._evicted,
        }
