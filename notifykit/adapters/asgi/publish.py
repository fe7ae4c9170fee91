"""The body of ``POST /publish``, parsed and validated without any I/O.

::

    {"event": "order.shipped", "data": {"id": 7}, "user": "42"}

``event`` (string) and exactly one target — ``"user": str``, ``"users": [str]``,
``"topic": str``, ``"authenticated": true`` or ``"broadcast": true`` — plus optional ``data``
(any JSON value, default null) and ``exclude`` (a connection id).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ...errors import InvalidNotification
from ...model import (
    Target,
    ToAuthenticated,
    ToEveryone,
    ToTopic,
    ToUsers,
    validate_connection_id,
    validate_event,
)
from ...wire import MAX_DATA_DEPTH

__all__ = ["PublishRequest", "parse_publish"]

_TARGETS = ("user", "users", "topic", "authenticated", "broadcast")
_KNOWN = frozenset((*_TARGETS, "event", "data", "exclude"))


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """A validated publish request."""

    target: Target
    event: str
    data: Any = None
    exclude: str | None = None


def parse_publish(body: bytes) -> PublishRequest:
    """Parse a ``POST /publish`` body; raise :class:`InvalidNotification` saying what is wrong."""
    try:
        obj = json.loads(body)
    except ValueError:
        raise InvalidNotification("body is not valid JSON") from None
    except RecursionError:
        raise InvalidNotification(
            f"body nests arrays and objects deeper than data may ({MAX_DATA_DEPTH} levels)"
        ) from None
    if not isinstance(obj, dict):
        raise InvalidNotification("body must be a JSON object")
    unknown = sorted(set(obj) - _KNOWN)
    if unknown:
        raise InvalidNotification(f"unknown field(s): {', '.join(unknown)}")
    event = validate_event(obj.get("event"))
    exclude = obj.get("exclude")
    if exclude is not None:
        validate_connection_id(exclude)
    given = [name for name in _TARGETS if name in obj]
    if len(given) != 1:
        raise InvalidNotification(
            'give exactly one target: "user", "users", "topic", "authenticated" or "broadcast"'
        )
    return PublishRequest(_target(given[0], obj[given[0]]), event, obj.get("data"), exclude)


def _target(name: str, value: Any) -> Target:
    if name == "user":
        return ToUsers((value,))
    if name == "users":
        if not isinstance(value, list):
            raise InvalidNotification('"users" must be a list of user ids')
        return ToUsers(tuple(value))  # ToUsers validates each id
    if name == "topic":
        return ToTopic(value)  # ToTopic validates the name
    if value is not True:
        raise InvalidNotification(f'"{name}" must be true')
    return ToAuthenticated() if name == "authenticated" else ToEveryone()
