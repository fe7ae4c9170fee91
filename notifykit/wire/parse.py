"""Parsing frames: :func:`parse_client` for what clients send, :func:`parse_server` for what
servers send (the client side's mirror), :func:`parse_positions` for ``resume``. Each raises
:class:`~notifykit.errors.ProtocolError`, and nothing else, whatever the input."""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import ProtocolError
from .frames import (
    MAX_RESUME_STREAMS,
    MAX_TOKEN_LENGTH,
    ClientFrame,
    Error,
    ErrorCode,
    Notification,
    Ping,
    Pong,
    Position,
    Refresh,
    Refreshed,
    ServerFrame,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Welcome,
)

__all__ = ["parse_client", "parse_positions", "parse_server"]

_EPOCH_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_STREAM_LENGTH = 300  # "u:" + a 256-character user id, or "t:" + a topic, with room
_REF_RE = re.compile(r"[\x20-\x7e]{1,64}")


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
