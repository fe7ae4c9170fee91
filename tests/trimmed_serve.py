"""``notifykit serve``, with one addition the soak test needs to measure memory.

    python tests/trimmed_serve.py serve --port ... (the arguments of ``notifykit``)

On ``SIGUSR1`` the process collects garbage, asks glibc to hand back the memory its allocator
keeps free (``malloc_trim(0)``) and prints to stderr::

    trimmed <n>: <blocks> blocks, <collected> collected since the last trim

``blocks`` is ``sys.getallocatedblocks()``, the objects Python's allocator holds: unlike RSS it
does not move with fragmentation, so it is what a leak of Python objects shows in.
``collected`` counts the objects the cyclic collector found unreachable since the previous
trim (this one's collection included): garbage that reference counting alone did not free.
Without the trim, a process's RSS after a churn of thousands of connections includes freed
memory that glibc keeps in the middle of its heap (it returns only the top on its own): tens
of MiB that the next churn reuses, and that would hide or fake a leak. After a trim, RSS is
what the process still uses. Everything else is ``notifykit serve`` itself
(``notifykit.cli.main``).
"""

from __future__ import annotations

import ctypes
import gc
import signal
import sys
from types import FrameType
from typing import Any

from notifykit.cli import main

_libc = ctypes.CDLL(None)
_trims = 0
_collected = 0


def _count(phase: str, info: dict[str, Any]) -> None:
    global _collected
    if phase == "stop":
        _collected += info["collected"]


def _trim(signum: int, frame: FrameType | None) -> None:
    global _trims, _collected
    gc.collect()
    _libc.malloc_trim(0)
    _trims += 1
    blocks, collected, _collected = sys.getallocatedblocks(), _collected, 0
    line = f"trimmed {_trims}: {blocks} blocks, {collected} collected since the last trim"
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, _trim)
    gc.callbacks.append(_count)
    sys.exit(main(sys.argv[1:]))
