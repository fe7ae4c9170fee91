"""The ``notifykit.v1`` wire protocol, sans I/O: frames, parsing, encoding and close codes.

Every frame is one JSON object in one websocket text frame, with a ``type`` field. Nothing here
touches a socket: :func:`parse_client` turns text from a client into a frame or raises
:class:`~notifykit.errors.ProtocolError`; :func:`encode` turns any frame into text.
:func:`parse_server` is the client side's mirror, used by tests and Python clients.

``docs/protocol.md`` is the contract written out for client authors; this module is the same
contract as code, in three modules: :mod:`.frames` (the dataclasses, codes and constants),
:mod:`.parse` and :mod:`.encode`; everything is importable from ``notifykit.wire``.
"""

from __future__ import annotations

from .encode import encode, encode_notification, unix_seconds, with_position
from .frames import (
    BEARER_PREFIX,
    MAX_DATA_DEPTH,
    MAX_RESUME_STREAMS,
    MAX_TOKEN_LENGTH,
    SUBPROTOCOL,
    ClientFrame,
    CloseCode,
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
from .parse import parse_client, parse_positions, parse_server

__all__ = [
    "BEARER_PREFIX",
    "MAX_DATA_DEPTH",
    "MAX_RESUME_STREAMS",
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
    "unix_seconds",
    "with_position",
]
