"""Translating redis-py's errors at the boundary.

Nothing from :mod:`redis.exceptions` leaves :mod:`notifykit.redis`: callers see
:class:`~notifykit.errors.PropagationError` (or :class:`~notifykit.errors.ConfigurationError`
for a URL that cannot work), with a message that names the server and says what went wrong,
never the password.
"""

from __future__ import annotations

from redis.exceptions import (
    AskError,
    ClusterDownError,
    RedisError,
    ResponseError,
    TryAgainError,
)

from ..errors import PropagationError

__all__ = [
    "CONNECTION_ERRORS",
    "EXPECTED_ERRORS",
    "PublishFailed",
    "describe",
    "is_redirect",
    "propagation_error",
]

CONNECTION_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError, TimeoutError)
"""What talking to a Redis server can raise: redis-py's errors, socket errors, timeouts."""

EXPECTED_ERRORS: tuple[type[Exception], ...] = (*CONNECTION_ERRORS, PropagationError)
"""The above, and our own account of a server that answered nonsense."""


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


def propagation_error(action: str, address: str, exc: BaseException) -> PropagationError:
    """A :class:`PropagationError` saying that ``action`` failed at ``address`` because of
    ``exc``; the caller raises it ``from`` the original."""
    return PropagationError(f"could not {action} (Redis at {address}): {describe(exc)}")


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
