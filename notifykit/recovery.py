"""Joining streams without a gap or a duplicate: what a connection gets when it registers or
subscribes, computed without I/O.

When a connection joins a stream (registering for its user's, "authenticated" and
"everyone" streams, or subscribing to a topic), the hub subscribes first, holds what arrives
live meanwhile, reads the stream's history, and waits for the propagator's barrier (every entry
published before the read has then arrived, and is held). With that read — the stream's
epoch, its last offset ``N``, what is still retained — :func:`catch_up` decides, for each
stream:

* for a stream the client resumes from position ``P``: if the stream continued (same epoch,
  ``P`` still retained), the entries after ``P`` up to ``N`` are replayed from history, then the
  held entries after ``N``; otherwise nothing is replayed, ``recovered`` is False (the client
  refetches) and the stream goes on as a new one;
* for any other stream: the held entries are delivered, and the client is told the position
  just before the first of them (``N`` if none was held). Every entry published after the
  subscription took effect is held, so every entry after that position reaches the client.

Each entry therefore reaches the client exactly once, in offset order, and the position the
client is told is always one after which it misses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .wire import Position

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from .model import StreamHistory

__all__ = ["Held", "Registration", "catch_up"]


class Held(list[tuple[Position | None, str]]):
    """What arrived live for a stream while a connection was joining it, as ``(position,
    frame)`` pairs; ``limit`` is how many it may hold (the connection's queue size) before the
    connection counts as a slow consumer."""

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Registration:
    """What joining streams found: the ``positions`` to tell the client (stream → last
    position), ``recovered`` (None unless the client asked to resume), and the ``frames`` to
    send after the frame that announces it (``welcome`` or ``subscribed``), in order."""

    positions: dict[str, Position] = field(default_factory=dict)
    recovered: bool | None = None
    frames: list[str] = field(default_factory=list)


def catch_up(
    keys: Iterable[str],
    streams: Mapping[str, StreamHistory],
    resume: Mapping[str, Position] | None,
    held: Mapping[str, Held],
    frame_of: Callable[[str, bytes], str | None],
) -> Registration:
    """Decide what a connection joining the streams of ``keys`` receives (module docstring).

    ``streams`` is what was read (a key without history is absent); ``resume`` maps streams to
    the client's positions (names that are not among ``keys`` are ignored: resume never
    reaches another stream); ``held`` is what arrived live per key meanwhile; ``frame_of``
    turns a key's stamped payload into its frame (None to skip a malformed one).
    """
    positions: dict[str, Position] = {}
    frames: list[str] = []
    recovered = None if resume is None else True
    for key in keys:
        stream = streams.get(key)
        start = resume.get(key) if resume is not None else None
        waiting = held.get(key, ())
        if stream is None:  # no history: what arrived is all there is
            if start is not None:
                recovered = False
            frames.extend(frame for _, frame in waiting)
            continue
        if start is not None and stream.continues(start):
            positions[key] = stream.position
            for offset, payload in stream.entries:
                if start.offset < offset <= stream.last:
                    frame = frame_of(key, payload)
                    if frame is not None:
                        frames.append(frame)
            frames.extend(frame for position, frame in waiting if _after(position, stream))
            continue
        if start is not None:
            recovered = False
        # A new start: from just before the first entry that arrived live.
        ours = [p.offset for p, _ in waiting if p is not None and p.epoch == stream.epoch]
        first = min(ours, default=stream.last + 1)
        positions[key] = Position(stream.epoch, min(first - 1, stream.last))
        frames.extend(frame for _, frame in waiting)
    return Registration(positions, recovered, frames)


def _after(position: Position | None, stream: StreamHistory) -> bool:
    """Whether a held entry comes after what the history read covered."""
    return position is None or position.epoch != stream.epoch or position.offset > stream.last
