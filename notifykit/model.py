"""Who is connected and who a notification is for: principals, targets and routing keys.

A notification is routed by *keys*, short strings that every implementation treats as opaque:

* ``u:<user_id>`` — every connection of one user (a user is just an implicit topic);
* ``t:<topic>`` — every connection subscribed to a topic;
* ``auth`` — every authenticated connection;
* ``all`` — every connection, anonymous ones included.

A connection joins ``u:<its user>``, ``auth`` and ``all`` when it is registered, and ``t:<topic>``
for each topic it subscribes to. One routing mechanism therefore serves users and topics alike,
and a propagator only needs to carry ``(key, payload)`` pairs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from .errors import InvalidNotification
from .wire import BEARER_PREFIX, Position

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "AUTHENTICATED_KEY",
    "BROADCAST_KEY",
    "Handshake",
    "Principal",
    "StreamHistory",
    "Target",
    "ToAuthenticated",
    "ToEveryone",
    "ToTopic",
    "ToUsers",
    "routing_keys",
    "topic_key",
    "user_key",
    "validate_connection_id",
    "validate_event",
    "validate_topic",
    "validate_user_id",
]

AUTHENTICATED_KEY = "auth"
BROADCAST_KEY = "all"

MAX_ID_LENGTH = 256
"""The longest user id, event name or topic name, in characters."""
_TOPIC_RE = re.compile(r"[A-Za-z0-9_.:/@=+#~-]{1,256}")
_CONNECTION_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")

# One function per kind of name: the HTTP API, the hub, the envelope and the gateway all
# validate through these, so a name is valid everywhere or nowhere.


def _is_text(value: str) -> bool:
    """True unless ``value`` holds a lone surrogate (which no UTF-8 frame can carry)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_user_id(user_id: object) -> str:
    """Return ``user_id`` if it is a usable user id: a non-empty string of at most 256
    characters of valid Unicode. Raises :class:`~notifykit.errors.InvalidNotification`."""
    if (
        not isinstance(user_id, str)
        or not user_id
        or len(user_id) > MAX_ID_LENGTH
        or not _is_text(user_id)
    ):
        raise InvalidNotification(
            f"a user id must be a non-empty string of at most {MAX_ID_LENGTH} characters"
        )
    return user_id


def validate_event(event: object) -> str:
    """Return ``event`` if it is a usable event name: a non-empty string of at most 256
    characters of valid Unicode. Raises :class:`~notifykit.errors.InvalidNotification`."""
    if not isinstance(event, str) or not event or len(event) > MAX_ID_LENGTH or not _is_text(event):
        raise InvalidNotification(
            f"event must be a non-empty string of at most {MAX_ID_LENGTH} characters"
        )
    return event


def validate_topic(topic: object) -> str:
    """Return ``topic`` if it is a valid topic name.

    Topic names are 1-256 characters from ``A-Z a-z 0-9 _ . : / @ = + # ~ -``; ``*`` is reserved
    for wildcards in authorization patterns. Raises
    :class:`~notifykit.errors.InvalidNotification`.
    """
    if not isinstance(topic, str) or _TOPIC_RE.fullmatch(topic) is None:
        raise InvalidNotification(
            "a topic name must be 1-256 characters from A-Z a-z 0-9 and _ . : / @ = + # ~ -"
        )
    return topic


def validate_connection_id(connection_id: object) -> str:
    """Return ``connection_id`` if it has the shape of a connection id (what ``exclude=``
    takes: 1-64 characters from ``A-Z a-z 0-9 _ -``, as in the ``welcome`` frame). Raises
    :class:`~notifykit.errors.InvalidNotification`."""
    if not isinstance(connection_id, str) or _CONNECTION_ID_RE.fullmatch(connection_id) is None:
        raise InvalidNotification("exclude must be a connection id (from the welcome frame)")
    return connection_id


def user_key(user_id: str) -> str:
    """The routing key that reaches every connection of ``user_id``."""
    return "u:" + user_id


def topic_key(topic: str) -> str:
    """The routing key that reaches every subscriber of ``topic``."""
    return "t:" + topic


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a connection belongs to, as proven by its token.

    ``user_id`` is ``None`` for an anonymous connection (allowed only when the gateway enables it).
    ``expires_at`` is the token's ``exp`` in Unix seconds, or ``None`` if it never expires.
    ``claims`` holds every verified claim, for topic authorization callbacks.
    """

    user_id: str | None
    claims: Mapping[str, Any] = field(default_factory=dict)
    expires_at: float | None = None

    @property
    def is_anonymous(self) -> bool:
        """True for a connection that presented no token."""
        return self.user_id is None

    def routing_keys(self) -> tuple[str, ...]:
        """The keys a connection of this principal joins when it is registered."""
        if self.user_id is None:
            return (BROADCAST_KEY,)
        return (user_key(self.user_id), AUTHENTICATED_KEY, BROADCAST_KEY)


@dataclass(frozen=True, slots=True)
class ToUsers:
    """Every connection of each of these users (duplicates are ignored)."""

    user_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.user_ids:
            raise InvalidNotification("a notification needs at least one user")
        for user_id in self.user_ids:
            validate_user_id(user_id)


@dataclass(frozen=True, slots=True)
class ToTopic:
    """Every connection subscribed to ``topic``."""

    topic: str

    def __post_init__(self) -> None:
        validate_topic(self.topic)


@dataclass(frozen=True, slots=True)
class ToAuthenticated:
    """Every authenticated connection, on every instance."""


@dataclass(frozen=True, slots=True)
class ToEveryone:
    """Every connection, anonymous ones included, on every instance."""


Target: TypeAlias = ToUsers | ToTopic | ToAuthenticated | ToEveryone


def routing_keys(target: Target) -> tuple[str, ...]:
    """The routing keys that together reach exactly ``target``; no connection is under two."""
    match target:
        case ToUsers(user_ids):
            return tuple(dict.fromkeys(user_key(u) for u in user_ids))
        case ToTopic(topic):
            return (topic_key(topic),)
        case ToAuthenticated():
            return (AUTHENTICATED_KEY,)
        case ToEveryone():
            return (BROADCAST_KEY,)
    raise InvalidNotification(f"not a notification target: {target!r}")  # pragma: no cover


def users(user_ids: Iterable[str]) -> ToUsers:
    """Build a :class:`ToUsers` target from any iterable of user ids."""
    if isinstance(user_ids, str):
        raise InvalidNotification("pass a list of user ids, not a single string")
    return ToUsers(tuple(user_ids))


@dataclass(frozen=True, slots=True)
class StreamHistory:
    """What a propagator's history holds for one stream (a routing key), read at one instant.

    ``epoch`` names this incarnation of the stream; ``last`` is its last offset (0 before the
    first notification); ``first`` is the first offset still retained (``last + 1`` when
    nothing is); ``entries`` are ``(offset, stamped payload)`` pairs after the offset asked
    for, in offset order, as many as were asked for. ``complete`` is False when ``entries``
    stops short of ``last`` because of the limit.
    """

    epoch: str
    last: int
    first: int
    entries: tuple[tuple[int, bytes], ...] = ()
    complete: bool = True

    @property
    def position(self) -> Position:
        """The stream's last position."""
        return Position(self.epoch, self.last)

    def continues(self, position: Position) -> bool:
        """True if a client at ``position`` can continue without a gap: same epoch, not ahead,
        and every entry after it still retained (and read)."""
        return (
            position.epoch == self.epoch
            and position.offset <= self.last
            and (position.offset == self.last or position.offset + 1 >= self.first)
            and self.complete
        )


@dataclass(frozen=True, slots=True)
class Handshake:
    """What a client sent when opening a websocket, framework-neutral.

    ``headers`` has lower-case names (the last value wins for repeated names); ``query`` is the
    decoded query string; ``subprotocols`` lists the offered ``Sec-WebSocket-Protocol`` entries.

    ``request`` is the framework's own view of the same request, for a
    :class:`~notifykit.protocols.HandshakeAuthenticator` that needs more than a token (a login
    session, a user a middleware resolved): the ASGI scope under the ASGI and Django Channels
    adapters, the ``ServerConnection`` under the ``websockets`` adapter, None elsewhere. Only
    authentication sees it: the gateway keeps nothing of the handshake once a connection is
    accepted.
    """

    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    subprotocols: tuple[str, ...] = ()
    client: str | None = None
    request: Any = field(default=None, repr=False, compare=False)

    def bearer_token(self) -> str | None:
        """The token the client presented, looked for in this order (first found wins):

        1. ``Authorization: Bearer <jwt>``;
        2. a ``Sec-WebSocket-Protocol`` entry ``bearer.<jwt>`` (browsers cannot set headers);
        3. the ``token`` query parameter (the least private: it ends up in access logs).
        """
        scheme, _, credentials = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        for offered in self.subprotocols:
            if offered.startswith(BEARER_PREFIX) and len(offered) > len(BEARER_PREFIX):
                return offered[len(BEARER_PREFIX) :]
        return self.query.get("token") or None
