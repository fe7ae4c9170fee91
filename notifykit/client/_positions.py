"""Where a client is in each stream it receives, fed with the server's raw frames; sans-I/O.

The server numbers every stream (a user's, a topic's, "authenticated", "everyone") with an
``epoch`` and offsets 1, 2, 3, ... (``docs/protocol.md``). A client keeps the last position it
saw per stream, sends them back to resume after a reconnect (the ``resume`` query parameter for
its own streams, ``since`` on ``subscribe`` for a topic) and drops any notification at or before
a position it already has, so a replay never delivers one twice.

A server that does not number streams sends none of these fields: then the book stays empty,
nothing is sent back and nothing is dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Position", "PositionBook"]


@dataclass(frozen=True, slots=True)
class Position:
    """A position in one stream: its ``epoch`` and the last ``offset`` received."""

    epoch: str
    offset: int

    @classmethod
    def from_json(cls, value: Any) -> Position | None:
        """``{"epoch": str, "offset": int}`` as a position; None for anything else."""
        if not isinstance(value, dict):
            return None
        epoch, offset = value.get("epoch"), value.get("offset")
        if not isinstance(epoch, str) or not isinstance(offset, int) or isinstance(offset, bool):
            return None
        return cls(epoch, offset)

    def to_json(self) -> dict[str, Any]:
        """``{"epoch": ..., "offset": ...}``, as the protocol writes a position."""
        return {"epoch": self.epoch, "offset": self.offset}


class PositionBook:
    """The client's positions: one per stream of its own, one per subscribed topic.

    Feed it every ``welcome`` (:meth:`welcomed`), ``subscribed`` (:meth:`subscribed`) and
    ``notification`` (:meth:`accept`) as the raw JSON objects, in the order they arrive.
    """

    def __init__(self, streams: Mapping[str, Position] | None = None) -> None:
        self.streams: dict[str, Position] = dict(streams or {})
        """Positions of the streams a connection receives from its start, by stream name."""
        self.topics: dict[str, Position] = {}
        """Positions of topic streams, by topic name."""

    def resume_url(self, url: str) -> str:
        """``url`` with the ``resume`` query parameter (JSON, URL-encoded) set to the client's
        stream positions; ``url`` unchanged when there is nothing to resume."""
        if not self.streams:
            return url
        resume = json.dumps(
            {stream: pos.to_json() for stream, pos in self.streams.items()}, separators=(",", ":")
        )
        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "resume"]
        query.append(("resume", resume))
        return urlunsplit(parts._replace(query=urlencode(query)))

    def since(self, topic: str) -> Position | None:
        """The position to send as ``since`` when subscribing to ``topic``."""
        return self.topics.get(topic)

    def welcomed(self, welcome: Mapping[str, Any]) -> bool | None:
        """Take the ``positions`` of a ``welcome``; return its ``recovered`` flag, if any.

        A stream the client resumed continuously (same epoch, not ahead of the server) keeps
        the client's own position: the missed entries follow the ``welcome`` and advance it.
        Every other stream starts at the server's position; streams the welcome does not list
        are forgotten.
        """
        recovered = welcome.get("recovered")
        recovered = recovered if isinstance(recovered, bool) else None
        given = welcome.get("positions")
        if isinstance(given, dict):
            streams: dict[str, Position] = {}
            for stream, raw in given.items():
                server = Position.from_json(raw)
                if server is not None:
                    streams[stream] = self._merge(self.streams.get(stream), server, recovered)
            self.streams = streams
        return recovered

    def subscribed(self, topic: str, frame: Mapping[str, Any]) -> bool | None:
        """Take the ``position`` of a ``subscribed``; return its ``recovered`` flag, if any."""
        recovered = frame.get("recovered")
        recovered = recovered if isinstance(recovered, bool) else None
        server = Position.from_json(frame.get("position"))
        if server is not None:
            self.topics[topic] = self._merge(self.topics.get(topic), server, recovered)
        return recovered

    def accept(self, notification: Mapping[str, Any]) -> bool:
        """Record a notification's position; False if it is one the client already had."""
        epoch, offset = notification.get("epoch"), notification.get("offset")
        if not isinstance(epoch, str) or not isinstance(offset, int):
            return True  # a server that does not number streams
        topic = notification.get("topic")
        if isinstance(topic, str):
            book, key = self.topics, topic
        else:
            stream = notification.get("stream")
            if not isinstance(stream, str):
                return True
            book, key = self.streams, stream
        mine = book.get(key)
        if mine is not None and mine.epoch == epoch and offset <= mine.offset:
            return False
        book[key] = Position(epoch, offset)
        return True

    def forget_topic(self, topic: str) -> None:
        """Drop a topic's position (after leaving it)."""
        self.topics.pop(topic, None)

    @staticmethod
    def _merge(mine: Position | None, server: Position, recovered: bool | None) -> Position:
        if (
            recovered is not False
            and mine is not None
            and mine.epoch == server.epoch
            and mine.offset <= server.offset
        ):
            return mine  # the server replays (mine.offset, server.offset] next
        return server
