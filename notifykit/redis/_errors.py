"""Translating redis-py's errors at the boundary.

Nothing from :mod:`redis.exceptions`, no socket error and no timeout leaves a public method of
:mod:`notifykit.redis`: every place that talks to Redis on a caller's behalf does so inside
:func:`map_redis_errors`, which turns them into :class:`~notifykit.errors.PropagationError` with
a message that names the server and says what went wrong, never the password. Background tasks
(subscribers, heartbeats, slot-map refreshes) catch what they raise, log it and retry; they use
:func:`is_outage` to tell an outage (logged as a warning) from a bug (logged with a traceback).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.exceptions import (
    AskError,
    ClusterDownError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)

from ..errors import PropagationError

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "PublishFailed",
    "describe",
    "is_outage",
    "is_redirect",
    "map_redis_errors",
]

_REDIS_ERRORS: tuple[type[Exception], ...] = (
    RedisError,
    RedisClusterException,  # redis-py's cluster client raises it, and it is no RedisError
    OSError,
    TimeoutError,
)
"""What talking to Redis can raise: redis-py's errors, socket errors, timeouts."""


def map_redis_errors(action: str, address: str) -> _RedisErrorMap:
    """A context manager that raises a :class:`~notifykit.errors.PropagationError` saying
    that ``action`` failed at ``address`` (``host:port``, no credentials) for any redis-py,
    socket or timeout error raised inside the block, chained to it; a ``PropagationError``
    passes unchanged::

        with map_redis_errors("read presence", self.address):
            count = await client.execute_command("ZCOUNT", key, now, "+inf")

    Anything else (a bug) propagates as it is.
    """
    return _RedisErrorMap(action, address)


class _RedisErrorMap:
    """:func:`map_redis_errors` as a class: it wraps every publish round trip, and a
    generator-based context manager costs twice as much."""

    __slots__ = ("action", "address")

    def __init__(self, action: str, address: str) -> None:
        self.action = action
        self.address = address

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, PropagationError) or not isinstance(exc, _REDIS_ERRORS):
            return
        message = f"could not {self.action} (Redis at {self.address}): {describe(exc)}"
        raise PropagationError(message) from exc


def is_outage(exc: BaseException) -> bool:
    """True if ``exc`` (or every leaf of an exception group) is what an unreachable or
    misbehaving Redis causes: a redis-py, socket or timeout error, or a ``PropagationError``.
    False for anything else, which is a bug worth a traceback."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_outage(inner) for inner in exc.exceptions)
    return isinstance(exc, (*_REDIS_ERRORS, PropagationError))


def describe(exc: BaseException) -> str:
    """A one-line account of ``exc`` for logs and error messages.

    An exception group (from a task group) is described by its first leaf, which is the one that
    ended the group.
    """
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip()
    if isinstance(exc, ResponseError):
        return f"Redis replied {text!r}"
    if isinstance(exc, TimeoutError) and not text:
        return "timed out"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def is_redirect(exc: BaseException) -> bool:
    """True for replies that mean "ask another node, or again later" in a Redis Cluster:
    ``MOVED``, ``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN``."""
    return isinstance(exc, AskError | TryAgainError | ClusterDownError)


class PublishFailed(PropagationError):
    """Redis refused some of the ``PUBLISH`` commands of one publish call.

    ``errors`` pairs each refused channel with Redis's reply (a ``MOVED`` redirection for a
    cluster whose slots moved, a ``NOPERM`` for a missing ACL permission...).
    """

    def __init__(self, address: str, errors: list[tuple[bytes, ResponseError]]) -> None:
        first_channel, first_error = errors[0]
        super().__init__(
            f"Redis at {address} refused to publish to {len(errors)} channel(s), "
            f"e.g. {first_channel!r}: {describe(first_error)}"
        )
        self.errors = errors
