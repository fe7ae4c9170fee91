"""Log lines without secrets: the ``token`` query parameter is redacted wherever it appears.

Browsers can only send a token in the query string (``/ws?token=<jwt>``), and uvicorn's access
and websocket log lines print the path with its query: :class:`RedactTokens`, a filter on every
handler ``notifykit serve`` configures, turns ``token=<jwt>`` into ``token=[redacted]`` in each
record's message and arguments before it is formatted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "RedactTokens", "redact"]

REDACTED = "[redacted]"
_TOKEN_PARAMETER = re.compile(r"([?&;]token=)[^&;#\s\"']*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the value of every ``token`` query parameter replaced by ``[redacted]``."""
    if "token=" not in text.lower():  # the usual case, without a regex
        return text
    return _TOKEN_PARAMETER.sub(lambda m: m[1] + REDACTED, text)


def _clean(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactTokens(logging.Filter):
    """Redact ``token`` query parameters from a record's message and string arguments (the
    arguments stay separate: uvicorn's access formatter reads them one by one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Clean ``record`` in place; never drops it."""
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, Mapping):
            record.args = {key: _clean(value) for key, value in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(_clean(value) for value in record.args)
        return True
