"""The notification envelope, its ids, and the payload format propagators carry.

A notification is encoded to its wire frame **once**, when it is published; every instance and
every connection then forwards those same bytes. The payload a propagator carries is::

    <exclude connection id, or nothing> b"\\n" <notification frame, UTF-8 JSON>

so a receiving instance finds whom to skip with one ``bytes.index`` and never parses the JSON.
A propagator that keeps history appends the payload to the stream of each key it is published
to, and delivers it *stamped* with its place there (:func:`stamp`)::

    b"#" <offset> b" " <epoch> b"\\n" <payload>

The receiving hub adds that place to the frame once per stream
(:func:`~notifykit.wire.with_position`), still without parsing the JSON. Redis does the
stamping in a Lua script, byte for byte as :func:`stamp` does.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidNotification
from .model import Target, ToTopic, routing_keys, validate_connection_id, validate_event
from .wire import Position, encode_notification

__all__ = ["Envelope", "IdGenerator", "pack", "stamp", "unpack", "unstamp"]

_BASE32HEX = "0123456789ABCDEFGHIJKLMNOPQRSTUV"
_PAIRS = tuple(a + b for a in _BASE32HEX for b in _BASE32HEX)
_SHIFTS = tuple(range(120, -1, -10))


class IdGenerator:
    """Unique, time-sortable ids: 48 bits of Unix milliseconds then 80 random bits, as 26
    characters of base32hex (whose alphabet sorts like the numbers it encodes).

    Within one millisecond the random part increments, so ids from one generator are strictly
    increasing; ids from different instances sort by time to the millisecond.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0

    def __call__(self) -> str:
        """Return a new id."""
        now = time.time_ns() // 1_000_000
        value = (now << 80) | int.from_bytes(os.urandom(10), "big")
        if value <= self._last:
            value = self._last + 1
        self._last = value
        # base32hex of the 128 bits (padded to 130), two characters per 10-bit lookup: the
        # same text as base64.b32hexencode, at a third of its cost.
        value <<= 2
        return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


@dataclass(frozen=True, slots=True)
class Envelope:
    """One notification on its way: what it says (``event``, ``data``), whom it is for
    (``target``, minus the ``exclude`` connection), and its ``id`` and ``created_at`` (Unix ms).
    """

    id: str
    event: str
    data: Any
    target: Target
    exclude: str | None = None
    created_at: int = field(default_factory=lambda: time.time_ns() // 1_000_000)

    def __post_init__(self) -> None:
        validate_event(self.event)
        if self.exclude is not None:
            validate_connection_id(self.exclude)

    def frame(self) -> str:
        """The ``notification`` frame clients receive, as JSON text."""
        topic = self.target.topic if isinstance(self.target, ToTopic) else None
        try:
            return encode_notification(self.id, self.event, self.data, self.created_at, topic)
        except ValueError as exc:
            raise InvalidNotification(str(exc)) from None

    def keys(self) -> tuple[str, ...]:
        """The routing keys this envelope is published to."""
        return routing_keys(self.target)


def pack(envelope: Envelope) -> bytes:
    """Encode ``envelope`` to the payload a propagator carries (see the module docstring)."""
    try:
        frame = envelope.frame().encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidNotification(
            "notification data holds text that is not valid Unicode"
        ) from None
    exclude = envelope.exclude.encode("utf-8") if envelope.exclude else b""
    return exclude + b"\n" + frame


def stamp(payload: bytes, position: Position) -> bytes:
    """``payload`` as delivered from a stream's history: with its ``position`` in front."""
    return b"#%d %s\n%s" % (position.offset, position.epoch.encode("ascii"), payload)


def unstamp(payload: bytes) -> tuple[Position | None, bytes]:
    """Split a payload into ``(its position, or None if not stamped; the payload as
    published)``. Raises ``ValueError`` for a malformed stamp."""
    if payload[:1] != b"#":
        return None, payload
    cut = payload.index(b"\n")
    offset, _, epoch = payload[1:cut].partition(b" ")
    return Position(epoch.decode("ascii"), int(offset)), payload[cut + 1 :]


def unpack(payload: bytes) -> tuple[str | None, Position | None, str]:
    """Split a (possibly stamped) payload into ``(exclude connection id or None, position or
    None, frame text)``.

    Raises ``ValueError`` for a payload notifykit did not produce.
    """
    position = None
    start = 0
    if payload[:1] == b"#":  # stamped: read the place without copying the payload
        start = payload.index(b"\n") + 1
        offset, _, epoch = payload[1 : start - 1].partition(b" ")
        position = Position(epoch.decode("ascii"), int(offset))
    cut = payload.index(b"\n", start)
    frame = payload[cut + 1 :].decode("utf-8")
    return (payload[start:cut].decode("ascii") if cut > start else None), position, frame
