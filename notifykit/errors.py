"""Every exception notifykit raises on purpose.

::

    NotifyKitError
    ├── ProtocolError (ValueError)         a client frame that is not valid notifykit.v1
    ├── InvalidNotification (ValueError)   a notification that cannot be sent
    ├── HistoryOff                         history was asked for, but none is kept
    ├── AuthenticationError                a token that does not prove who the client is
    │   └── TokenExpired                   ... because it has expired
    ├── PropagationError (ConnectionError) the propagator could not carry a message
    ├── TransportClosed (ConnectionError)  the websocket went away while we were sending
    ├── NotRunning (RuntimeError)          the hub (or a backend) is not started, or stopped
    └── ConfigurationError (ValueError)    settings or options that cannot work

Foreign errors (redis-py, PyJWT, a framework's websocket errors) are translated into these at
the boundary where they occur, so callers can catch by meaning: ``except PropagationError`` covers
a Redis outage whatever redis-py called it.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "HistoryOff",
    "InvalidNotification",
    "NotRunning",
    "NotifyKitError",
    "PropagationError",
    "ProtocolError",
    "TokenExpired",
    "TransportClosed",
]


class NotifyKitError(Exception):
    """Root of every exception notifykit raises on purpose."""


class ProtocolError(NotifyKitError, ValueError):
    """A client frame is not valid ``notifykit.v1``.

    ``code`` is the snake_case error code sent back to the client in an ``error`` frame
    (``bad_frame``, ``unknown_type``, ``frame_too_large``); ``str(exc)`` is the human message;
    ``ref`` is the client's request reference, when the frame had a valid one.
    """

    def __init__(self, message: str, code: str = "bad_frame", ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.ref = ref


class InvalidNotification(NotifyKitError, ValueError):
    """A notification cannot be sent: an empty target, a bad topic name, data that is not JSON."""


class HistoryOff(NotifyKitError):
    """History was asked for, but the propagator keeps none (``history_size=0``)."""


class AuthenticationError(NotifyKitError):
    """A token does not prove who the client is (missing, malformed, forged, wrong audience...).

    ``str(exc)`` is safe to show to the client: it says what was wrong without echoing secrets.
    """


class TokenExpired(AuthenticationError):
    """The token was valid once, but its ``exp`` has passed."""


class PropagationError(NotifyKitError, ConnectionError):
    """The propagator could not publish or subscribe (for Redis: the server is unreachable)."""


class TransportClosed(NotifyKitError, ConnectionError):
    """The websocket is gone: the client disconnected or the server already closed it."""


class NotRunning(NotifyKitError, RuntimeError):
    """The hub is not running (not entered yet, or closed): nothing can be sent or registered.

    The HTTP API answers it with 503, like a :class:`PropagationError`.
    """


class ConfigurationError(NotifyKitError, ValueError):
    """Settings that cannot work: no JWT key, an unknown algorithm, ``none`` as an algorithm,
    a queue size below 1..."""
