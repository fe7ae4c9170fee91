"""``notifykit serve``, with one addition the soak test needs to measure memory.

    python tests/trimmed_serve.py serve --port ... (the arguments of ``notifykit``)

On ``SIGUSR1`` the process collects garbage, asks glibc to hand back the memory its allocator
keeps free (``malloc_trim(0)``) and prints ``trimmed <n>`` to stderr. Without that, a process's
RSS after a churn of thousands of connections includes freed memory that glibc keeps in the
middle of its heap (it returns only the top on its own): tens of MiB that the next churn reuses,
and that would hide or fake a leak. After a trim, RSS is what the process still uses.
Everything else is ``notifykit serve`` itself (``notifykit.cli.main``).
"""

from __future__ import annotations

import ctypes
import gc
import signal
import sys
from types import FrameType

from notifykit.cli import main

_libc = ctypes.CDLL(None)
_trims = 0


def _trim(signum: int, frame: FrameType | None) -> None:
    global _trims
    gc.collect()
    _libc.malloc_trim(0)
    _trims += 1
    print(f"trimmed {_trims}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, _trim)
    sys.exit(main(sys.argv[1:]))
