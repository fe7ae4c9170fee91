"""The ``notifykit.v1`` wire protocol, sans I/O: frames, parsing, encoding and close codes.

Every frame is one JSON object in one websocket text frame, with a ``type`` field. Nothing here
touches a socket: :func:`parse_client` turns text from a client into a frame or raises
:class:`~notifykit.errors.ProtocolError`; :func:`encode` turns any frame into text.
:func:`parse_server` is the client side's mirror, used by tests and Python clients.

``docs/protocol.md`` is the contract written out for client authors; this module is the same
contract as code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Any, TypeAlias

from .errors import ProtocolError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "BEARER_PREFIX",
    "MAX_DATA_DEPTH",
    "MAX_TOKEN_LENGTH",
    "SUBPROTOCOL",
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
    "encode",
    "encode_notification",
    "parse_client",
    "parse_positions",
    "parse_server",
    "with_position",
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
    """The server could not register the connection (e.g. Redis unreachable); retry with backoff."""
    UNAUTHORIZED = 4001
    """No token, an invalid token, or the token expired without a refresh."""
    FORBIDDEN = 4003
    """The client is not allowed here (e.g. its ``Origin`` is not on the allow-list)."""
    SLOW_CONSUMER = 4008
    """The client fell so far behind that its outbound queue overflowed; reconnect."""
    BAD_FRAME = 4400
    """The client kept sending invalid frames."""


class ErrorCode(StrEnum):
    """The ``code`` values of ``error`` frames (short snake_case strings)."""

    BAD_FRAME = "bad_frame"
    UNKNOWN_TYPE = "unknown_type"
    FRAME_TOO_LARGE = "frame_too_large"
    FORBIDDEN = "forbidden"
    INVALID_TOPIC = "invalid_topic"
    UNAVAILABLE = "unavailable"


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

# --- parsing ------------------------------------------------------------------------------

MAX_TOKEN_LENGTH = 8192
"""The longest token accepted, in characters (longer ones are refused unread)."""
MAX_DATA_DEPTH = 64
"""How deeply a notification's ``data`` may nest arrays and objects (``[[1]]`` is 2 deep)."""
MAX_RESUME_STREAMS = 16
"""The most streams one ``resume`` may name (a connection receives from four)."""
_EPOCH_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_STREAM_LENGTH = 300  # "u:" + a 256-character user id, or "t:" + a topic, with room
_REF_RE = re.compile(r"[\x20-\x7e]{1,64}")
_TYPE_NAMES: dict[type, str] = {
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


def _load_object(text: str | bytes) -> dict[str, Any]:
    if not isinstance(text, str):
        raise ProtocolError("binary frames are not supported; send JSON text frames")
    try:
        obj = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise ProtocolError("frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("frame must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError('frame needs a string "type" field')
    return obj


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _ref(obj: dict[str, Any]) -> str | None:
    ref = obj.get("ref")
    if ref is None:
        return None
    if not isinstance(ref, str) or _REF_RE.fullmatch(ref) is None:
        raise ProtocolError('"ref" must be 1-64 printable ASCII characters')
    return ref


def _str_field(obj: dict[str, Any], name: str, max_length: int | None = None) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise ProtocolError(f'"{obj["type"]}" needs a non-empty string "{name}"')
    if max_length is not None and len(value) > max_length:
        raise ProtocolError(f'"{name}" is longer than {max_length} characters')
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate escape such as "\ud800"
            raise ProtocolError(f'"{name}" is not valid Unicode') from None
    return value


def _position(value: Any, name: str) -> Position:
    """``{"epoch": str, "offset": int}`` as a :class:`Position`; ProtocolError otherwise."""
    if not isinstance(value, dict):
        raise ProtocolError(f'"{name}" must be an object {{"epoch": ..., "offset": ...}}')
    epoch, offset = value.get("epoch"), value.get("offset")
    if not isinstance(epoch, str) or _EPOCH_RE.fullmatch(epoch) is None:
        raise ProtocolError(f'"{name}" needs an "epoch" of 1-64 characters A-Z a-z 0-9 _ -')
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset < 2**63:
        raise ProtocolError(f'"{name}" needs an "offset" that is an integer from 0')
    return Position(epoch, offset)


def parse_positions(text: str) -> dict[str, Position]:
    """Parse a ``resume`` query parameter: a JSON object ``{stream: {"epoch", "offset"}}``.

    Raises :class:`~notifykit.errors.ProtocolError` for anything else, for more than
    :data:`MAX_RESUME_STREAMS` streams, or for a stream name that cannot be one.
    """
    try:
        obj = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise ProtocolError("resume is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError('resume must be a JSON object {stream: {"epoch", "offset"}}')
    if len(obj) > MAX_RESUME_STREAMS:
        raise ProtocolError(f"resume names more than {MAX_RESUME_STREAMS} streams")
    positions = {}
    for stream, value in obj.items():
        if not stream or len(stream) > _MAX_STREAM_LENGTH:
            raise ProtocolError("resume names a stream that cannot be one")
        positions[stream] = _position(value, "resume")
    return positions


def parse_client(text: str | bytes) -> ClientFrame:
    """Parse one frame from a client.

    Raises :class:`~notifykit.errors.ProtocolError` — and nothing else, whatever the input —
    with ``code`` ``bad_frame`` (not JSON, wrong shape, text that is not valid Unicode) or
    ``unknown_type``, and ``ref`` set when the frame carried a valid one. Unknown fields are
    ignored, so clients may add their own. Topic names are checked for shape by the gateway,
    which answers ``invalid_topic``.
    """
    obj = _load_object(text)
    kind = obj["type"]
    ref = _ref(obj)
    try:
        if kind == "ping":
            return Ping(ref)
        # Topic names are only required to be strings here: the gateway checks them with
        # model.validate_topic, the one rule for topic names, and answers invalid_topic.
        if kind == "subscribe":
            since = obj.get("since")
            return Subscribe(
                _str_field(obj, "topic"), ref, None if since is None else _position(since, "since")
            )
        if kind == "unsubscribe":
            return Unsubscribe(_str_field(obj, "topic"), ref)
        if kind == "refresh":
            return Refresh(_str_field(obj, "token", MAX_TOKEN_LENGTH), ref)
        raise ProtocolError(f"unknown frame type {kind[:32]!r}", code=ErrorCode.UNKNOWN_TYPE)
    except ProtocolError as exc:
        exc.ref = ref  # a valid ref is echoed even when the rest of the frame is not
        raise


def _opt_str(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise ProtocolError(f'"{name}" must be a string')
    return value


def _opt_int(obj: dict[str, Any], name: str) -> int | None:
    value = obj.get(name)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ProtocolError(f'"{name}" must be an integer')
    return value


def _opt_bool(obj: dict[str, Any], name: str) -> bool | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, bool):
        raise ProtocolError(f'"{name}" must be true or false')
    return value


def _req(obj: dict[str, Any], name: str, kind: type) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f'"{obj["type"]}" needs "{name}" of type {kind.__name__}')
    return value


def parse_server(text: str | bytes) -> ServerFrame:
    """Parse one frame from a server (the client side of the protocol).

    Raises :class:`~notifykit.errors.ProtocolError` for anything that is not a valid server
    frame.
    """
    obj = _load_object(text)
    kind = obj["type"]
    if kind == "notification":
        if "data" not in obj:
            raise ProtocolError('"notification" needs "data"')
        return Notification(
            _req(obj, "id", str),
            _req(obj, "event", str),
            obj["data"],
            _req(obj, "ts", int),
            _opt_str(obj, "topic"),
            _opt_str(obj, "stream"),
            _opt_int(obj, "offset"),
            _opt_str(obj, "epoch"),
        )
    if kind == "welcome":
        if "user" not in obj:
            raise ProtocolError('"welcome" needs "user"')
        positions = obj.get("positions", {})
        if not isinstance(positions, dict):
            raise ProtocolError('"positions" must be an object')
        return Welcome(
            _req(obj, "connection_id", str),
            _opt_str(obj, "user"),
            _opt_int(obj, "expires_at"),
            {stream: _position(value, "positions") for stream, value in positions.items()},
            _opt_bool(obj, "recovered"),
        )
    if kind == "pong":
        return Pong(_opt_str(obj, "ref"))
    if kind == "subscribed":
        position = obj.get("position")
        return Subscribed(
            _req(obj, "topic", str),
            _opt_str(obj, "ref"),
            None if position is None else _position(position, "position"),
            _opt_bool(obj, "recovered"),
        )
    if kind == "unsubscribed":
        return Unsubscribed(_req(obj, "topic", str), _opt_str(obj, "ref"))
    if kind == "refreshed":
        return Refreshed(_opt_int(obj, "expires_at"), _opt_str(obj, "ref"))
    if kind == "error":
        return Error(_req(obj, "code", str), _req(obj, "message", str), _opt_str(obj, "ref"))
    raise ProtocolError(f"unknown frame type {kind[:32]!r}", code=ErrorCode.UNKNOWN_TYPE)


# --- encoding -----------------------------------------------------------------------------

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
    obj: dict[str, Any] = {"type": _TYPE_NAMES[type(frame)]}
    for name in frame.__slots__:
        value = getattr(frame, name)
        if isinstance(value, Position):
            value = {"epoch": value.epoch, "offset": value.offset}
        elif name == "positions":
            value = {k: {"epoch": v.epoch, "offset": v.offset} for k, v in value.items()}
        if value is not None or (name == "user" and isinstance(frame, Welcome)):
            obj[name] = value
    return _dumps(obj)


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
