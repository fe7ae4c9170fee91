"""What every conformance check shares: bounded waits and failures that name the rule.

Failures are raised as :class:`AssertionError` explicitly (never with ``assert``), so the checks
work under ``python -O``.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["STAT_NAME", "TIMEOUT", "bounded", "expect", "short"]

TIMEOUT = 5.0
"""The default ``timeout`` of every check: seconds any one wait (a delivery, a subscribe, a
publish, an ``aclose``...) may take before the check fails."""
STAT_NAME = re.compile(r"[a-z][a-z0-9_]*")


def expect(condition: bool, message: str) -> None:
    """Raise :class:`AssertionError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise AssertionError(message)


def short(value: object) -> str:
    """``repr(value)``, cut to 200 characters for a failure message."""
    text = repr(value)
    return text if len(text) <= 200 else f"{text[:200]}... ({len(text)} characters)"


@contextmanager
def bounded(what: str, timeout: float) -> Iterator[None]:
    """Fail with a message naming ``what`` unless the block finishes within ``timeout`` s."""
    try:
        with anyio.fail_after(timeout):
            yield
    except TimeoutError:
        raise AssertionError(f"{what} did not return within {timeout} s") from None
