"""The frames of ``notifykit.v1`` as frozen dataclasses, and its codes and constants."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "BEARER_PREFIX",
    "MAX_DATA_DEPTH",
    "MAX_RESUME_STREAMS",
    "MAX_TOKEN_LENGTH",
    "SUBPROTOCOL",
    "TYPE_NAMES",
    "ClientFrame",
    "CloseCode",
    "Error",
    "ErrorCode",
    "Notification",
    "Ping",
    "Pong",
    "Position",
    "Refresh",
    "Refreshed",
    "ServerFrame",
    "Subscribe",
    "Subscribed",
    "Unsubscribe",
    "Unsubscribed",
    "Welcome",
]

SUBPROTOCOL = "notifykit.v1"
"""The websocket subprotocol clients offer (and the server selects)."""

BEARER_PREFIX = "bearer."
"""A ``Sec-WebSocket-Protocol`` entry ``bearer.<jwt>`` carries a token from a browser."""


class CloseCode(IntEnum):
    """Websocket close codes the server uses, each with a documented meaning."""

    NORMAL = 1000
    GOING_AWAY = 1001
    """The server is shutting down; reconnect (to another instance)."""
    MESSAGE_TOO_BIG = 1009
    """Sent by the websocket server itself for a frame beyond its hard limit (``notifykit
    serve`` sets it to 4x ``max_frame_bytes``); smaller oversized frames get an ``error``
    frame ``frame_too_large`` and the connection stays open."""
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    """The server could not register the connection (e.g. Redis unreachable), or serves as many
    connections as it allows; retry with backoff."""
    UNAUTHORIZED = 4001
    """No token, an invalid token, or the token expired without a refresh."""
    FORBIDDEN = 4003
    """The client is not allowed here (e.g. its ``Origin`` is not on the allow-list)."""
    SLOW_CONSUMER = 4008
    """The client fell so far behind that its outbound queue overflowed; reconnect."""
    BAD_FRAME = 4400
    """The client kept sending invalid frames."""
    TOO_MANY_CONNECTIONS = 4409
    """The user already has as many connections to this server as it allows; close one (or
    retry with a long backoff)."""
    RATE_LIMITED = 4429
    """The client kept sending frames faster than allowed after ``rate_limited`` errors."""


class ErrorCode(StrEnum):
    """The ``code`` values of ``error`` frames (short snake_case strings)."""

    BAD_FRAME = "bad_frame"
    UNKNOWN_TYPE = "unknown_type"
    FRAME_TOO_LARGE = "frame_too_large"
    FORBIDDEN = "forbidden"
    INVALID_TOPIC = "invalid_topic"
    UNAVAILABLE = "unavailable"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class Position:
    """A place in a stream: its ``epoch`` and an ``offset`` (the last one seen or sent).

    Every stream numbers its notifications 1, 2, 3, ... with no holes; the epoch changes
    whenever the stream's history is lost or reset, so a position from another epoch never
    matches a current one. On the wire: ``{"epoch": "ab12", "offset": 17}``.
    """

    epoch: str
    offset: int


# --- client frames ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """Client → server: are you there? Answered with :class:`Pong`."""

    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Refresh:
    """Client → server: extend this connection with a fresh token for the same user."""

    token: str
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Client → server: start receiving notifications sent to ``topic``; with ``since``, also
    the ones sent after that position that the client missed."""

    topic: str
    ref: str | None = None
    since: Position | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Client → server: stop receiving notifications sent to ``topic``."""

    topic: str
    ref: str | None = None


ClientFrame: TypeAlias = Ping | Refresh | Subscribe | Unsubscribe

# --- server frames ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcome:
    """Server → client, first frame: the connection is registered and will receive.

    ``positions`` gives, for each stream the connection receives from its start, the last
    offset when it was registered: every later notification of those streams reaches it.
    ``recovered`` is set only when the client asked to ``resume``: True if every stream it
    named continued without a gap (the missed notifications follow this frame), False if not.
    """

    connection_id: str
    user: str | None
    expires_at: int | None = None
    positions: Mapping[str, Position] = field(default_factory=dict)
    recovered: bool | None = None


@dataclass(frozen=True, slots=True)
class Notification:
    """Server → client: a notification. ``ts`` is its creation time in Unix milliseconds;
    ``topic`` is set when it was sent to a topic. ``stream``, ``offset`` and ``epoch`` place it
    in the history of the stream it was sent to (absent when history is off)."""

    id: str
    event: str
    data: Any
    ts: int
    topic: str | None = None
    stream: str | None = None
    offset: int | None = None
    epoch: str | None = None


@dataclass(frozen=True, slots=True)
class Pong:
    """Server → client: answer to :class:`Ping`."""

    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Subscribed:
    """Server → client: the subscription to ``topic`` is active. ``position`` is the topic
    stream's last offset then (every later notification reaches the client); ``recovered`` is
    set only for a ``subscribe`` with ``since``, as for :class:`Welcome`."""

    topic: str
    ref: str | None = None
    position: Position | None = None
    recovered: bool | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """Server → client: no more notifications for ``topic``."""

    topic: str
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Refreshed:
    """Server → client: the refresh was accepted; the connection now lasts until ``expires_at``."""

    expires_at: int | None
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Error:
    """Server → client: a request failed (or a frame was invalid); the connection stays open."""

    code: str
    message: str
    ref: str | None = None


ServerFrame: TypeAlias = (
    Welcome | Notification | Pong | Subscribed | Unsubscribed | Refreshed | Error
)

MAX_TOKEN_LENGTH = 8192
"""The longest token accepted, in characters (longer ones are refused unread)."""
MAX_DATA_DEPTH = 64
"""How deeply a notification's ``data`` may nest arrays and objects (``[[1]]`` is 2 deep)."""
MAX_RESUME_STREAMS = 16
"""The most streams one ``resume`` may name (a connection receives from four)."""

TYPE_NAMES: dict[type, str] = {
    Ping: "ping",
    Refresh: "refresh",
    Subscribe: "subscribe",
    Unsubscribe: "unsubscribe",
    Welcome: "welcome",
    Notification: "notification",
    Pong: "pong",
    Subscribed: "subscribed",
    Unsubscribed: "unsubscribed",
    Refreshed: "refreshed",
    Error: "error",
}
"""Each frame class's ``type``."""
