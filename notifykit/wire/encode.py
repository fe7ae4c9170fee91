"""Encoding frames to the JSON text of one websocket frame; the notification frame, which the
hot path encodes once per notification, and its place in a stream, added once per stream."""

from __future__ import annotations

import json
from typing import Any

from .frames import (
    MAX_DATA_DEPTH,
    TYPE_NAMES,
    ClientFrame,
    Notification,
    Position,
    ServerFrame,
    Welcome,
)

__all__ = ["encode", "encode_notification", "unix_seconds", "with_position"]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def encode(frame: ClientFrame | ServerFrame) -> str:
    """Encode any frame as the JSON text of one websocket frame.

    Optional fields that are ``None`` are left out — except ``welcome.user`` (``null`` means
    anonymous) and ``notification.data``. Raises ``ValueError`` if ``data`` is not JSON.
    """
    if isinstance(frame, Notification):
        text = encode_notification(frame.id, frame.event, frame.data, frame.ts, frame.topic)
        if frame.stream is None or frame.offset is None or frame.epoch is None:
            return text
        return with_position(text, frame.stream, Position(frame.epoch, frame.offset))
    obj: dict[str, Any] = {"type": TYPE_NAMES[type(frame)]}
    for name in frame.__slots__:
        value = getattr(frame, name)
        if isinstance(value, Position):
            value = {"epoch": value.epoch, "offset": value.offset}
        elif name == "positions":
            value = {k: {"epoch": v.epoch, "offset": v.offset} for k, v in value.items()}
        if value is not None or (name == "user" and isinstance(frame, Welcome)):
            obj[name] = value
    return _dumps(obj)


def unix_seconds(expires_at: float | None) -> int | None:
    """A token's expiry as the whole Unix seconds a frame carries (None for none)."""
    return None if expires_at is None else int(expires_at)


def with_position(frame: str, stream: str, position: Position) -> str:
    """A notification frame (as :func:`encode_notification` makes it) with its place in
    ``stream`` added: ``"stream"``, ``"offset"`` and ``"epoch"`` at its end. The hub does this
    once per stream a notification is sent to, never per connection."""
    place = f'"stream":{_dumps(stream)},"offset":{position.offset},"epoch":"{position.epoch}"'
    return f"{frame[:-1]},{place}}}"


def encode_notification(id: str, event: str, data: Any, ts: int, topic: str | None = None) -> str:
    """Encode a notification frame; the hot path calls this once per notification.

    Raises ``ValueError`` if ``data`` is not JSON-serializable (``TypeError`` for
    unserializable objects is turned into it) or nests deeper than :data:`MAX_DATA_DEPTH`.
    """
    obj: dict[str, Any] = {"type": "notification", "id": id, "event": event, "data": data, "ts": ts}
    if topic is not None:
        obj["topic"] = topic
    try:
        text = _dumps(obj)
    except TypeError as exc:
        raise ValueError(f"notification data is not JSON-serializable: {exc}") from None
    except RecursionError:  # deeper than the interpreter's stack: far beyond the limit
        raise ValueError(_TOO_DEEP) from None
    # The frame holds no more nesting than it has brackets: only a frame with many of them
    # (in data or in its strings) pays for the exact walk.
    if text.count("[") + text.count("{") > MAX_DATA_DEPTH and _depth(data) > MAX_DATA_DEPTH:
        raise ValueError(_TOO_DEEP)
    return text


_TOO_DEEP = f"notification data nests arrays and objects deeper than {MAX_DATA_DEPTH} levels"


def _depth(data: Any) -> int:
    """How deeply ``data`` nests lists and dicts, without recursion (stops past the limit)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list | tuple):
            children = value
        else:
            continue
        if depth > deepest:
            deepest = depth
            if deepest > MAX_DATA_DEPTH:
                break
        stack.extend((child, depth + 1) for child in children)
    return deepest
