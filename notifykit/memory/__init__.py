"""In-memory implementations: the default for one process, and what apps unit-test against.

* :class:`MemorySocketState` — the connections this instance holds, by routing key.
* :class:`MemoryPropagator` — propagation within one process. Propagators that share a
  :class:`MemoryBus` behave like instances that share a Redis: each receives only the keys it
  subscribed to. With no bus given, a propagator has a bus of its own (the common case).
* :class:`MemoryHistory` — per-stream history with offsets and epochs, bounded per stream and
  in total; what a :class:`MemoryBus` keeps.
* :class:`MemoryPresence` — who is online. Presences made with :meth:`MemoryPresence.peer`
  share what they record, as instances of one deployment share a Redis.

All of them run on any anyio backend (asyncio or trio).
"""

from __future__ import annotations

from .history import MemoryHistory
from .presence import MemoryPresence
from .propagator import MemoryBus, MemoryPropagator
from .socket_state import MemorySocketState

__all__ = ["MemoryBus", "MemoryHistory", "MemoryPresence", "MemoryPropagator", "MemorySocketState"]
