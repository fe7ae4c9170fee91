"""What ``notifykit serve`` logs, and how: every line without secrets, as text or JSON.

**Redaction.** A token can reach a log line in more ways than notifykit's own lines (which never
print one): uvicorn's access and websocket lines print the path with its query
(``/ws?token=<jwt>``), and at ``debug`` level the websocket library prints every handshake
header (``Authorization: Bearer <jwt>``, ``Sec-WebSocket-Protocol: notifykit.v1,
bearer.<jwt>``) and the start of every frame (a ``refresh`` frame holds a token). An API key
travels in ``Authorization: Bearer <key>`` too. :class:`RedactTokens`, a filter on every handler
``serve`` configures (the root logger's included), replaces in each record's message, arguments
and traceback:

* the value of a ``token`` query parameter (``token=[redacted]``);
* the credentials after ``Bearer`` (``Bearer [redacted]``) and after ``bearer.``;
* the value of a ``"token"`` JSON member (``"token": "[redacted]"``);
* anything shaped like a JWT (``eyJ...``, with at least one dot), wherever it appears.

**Formats.** ``text`` (the default) is uvicorn's lines plus notifykit's as
``LEVEL:  logger: message``; ``json`` (:class:`JSONFormatter`) writes one JSON object per line
for every logger, with ``time``, ``level``, ``logger``, ``message``, the fields notifykit adds
(``connection_id``, ``user_id``, ``close_code``, ``reason``, ``client``...) and ``exception``.
:func:`logging_config` is the ``logging.config.dictConfig`` that ``serve`` hands uvicorn.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "JSONFormatter", "RedactTokens", "logging_config", "redact"]

REDACTED = "[redacted]"

_SECRETS = re.compile(
    r"""
      (?P<query>[?&;]token=)[^&;#\s"']*                      # ?token=<jwt>
    | (?P<bearer>\bbearer(?:\s+|\.))[^\s,;"'<>]+              # Bearer <key>, bearer.<jwt>
    | (?P<member>"token"\s*:\s*")(?:[^"\\]|\\.)*              # "token": "<jwt>"
    | \beyJ[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*){1,2}            # a JWT (or its first part)
    """,
    re.IGNORECASE | re.VERBOSE,
)
_HINTS = ("token", "bearer", "eyj")
"""Every secret the pattern finds contains one of these (lower-cased): text without any of
them is returned as it is, without running the regex."""


def redact(text: str) -> str:
    """``text`` with every token and API key it holds (see the module docstring) replaced by
    ``[redacted]``."""
    lowered = text.lower()
    if not any(hint in lowered for hint in _HINTS):  # the usual case, without a regex
        return text
    return _SECRETS.sub(_keep_prefix, text)


def _keep_prefix(match: re.Match[str]) -> str:
    prefix = match["query"] or match["bearer"] or match["member"] or ""
    return prefix + REDACTED


def _clean(value: Any) -> Any:
    """A log argument without secrets: a string redacted; another object replaced by its
    redacted text only if that text held a secret (so ``%d`` still gets its number)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int | float | bool | type(None)):
        return value
    text = str(value)
    clean = redact(text)
    return value if clean == text else clean


class RedactTokens(logging.Filter):
    """Redact tokens and API keys from a record's message, arguments and traceback (the
    arguments stay separate: uvicorn's access formatter reads them one by one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Clean ``record`` in place; never drops it."""
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, Mapping):
            record.args = {key: _clean(value) for key, value in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(_clean(value) for value in record.args)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_STANDARD = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
    "taskName",
}
"""LogRecord attributes that are not fields a caller added with ``extra``."""
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")
"""The arguments of a uvicorn access line, as fields."""


class JSONFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time`` (ISO 8601, UTC, milliseconds),
    ``level``, ``logger``, ``message``, every ``extra`` field, ``exception`` (the traceback,
    if any); uvicorn's access lines also get ``client``, ``method``, ``path``,
    ``http_version`` and ``status``."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        seconds = time.gmtime(record.created)
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            entry.update(zip(_ACCESS_FIELDS, args, strict=True))
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in entry:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


def logging_config(level: str, log_format: str = "text") -> dict[str, Any]:
    """uvicorn's logging configuration, plus notifykit's loggers and the root logger (other
    libraries, at ``warning`` or above) beside it; every handler redacts secrets; with
    ``log_format="json"`` every handler writes :class:`JSONFormatter` lines."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact_tokens": {"()": RedactTokens}}
    config["formatters"]["notifykit"] = {"format": "%(levelname)s:  %(name)s: %(message)s"}
    config["handlers"]["notifykit"] = {
        "class": "logging.StreamHandler",
        "formatter": "notifykit",
        "stream": "ext://sys.stderr",
    }
    if log_format == "json":
        config["formatters"] = {"json": {"()": JSONFormatter}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact_tokens"]
        if log_format == "json":
            handler["formatter"] = "json"
    config["loggers"]["notifykit"] = {
        "handlers": ["notifykit"],
        "level": level.upper(),
        "propagate": False,
    }
    # Other libraries' warnings (asyncio, redis...) go through the same redacting handler
    # instead of Python's unfiltered last-resort one.
    others = max(logging.getLevelName(level.upper()), logging.WARNING)
    config["root"] = {"handlers": ["notifykit"], "level": logging.getLevelName(others)}
    return config
