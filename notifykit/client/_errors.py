"""The exceptions of the Python client, under notifykit's root :class:`NotifyKitError`.

::

    NotifyKitError
    └── ClientError               the client could not do what was asked
        ├── RequestRefused        the server answered a request with an ``error`` frame
        └── ClientClosed          the client stopped and will not connect again
"""

from __future__ import annotations

from ..errors import NotifyKitError

__all__ = ["ClientClosed", "ClientError", "RequestRefused"]


class ClientError(NotifyKitError):
    """Root of the errors :class:`~notifykit.client.NotifyClient` raises."""


class RequestRefused(ClientError):
    """The server answered ``subscribe``/``unsubscribe``/``refresh`` with an ``error`` frame.

    ``code`` is the protocol's error code (``forbidden``, ``invalid_topic``, ``unavailable``,
    ``bad_frame``...; see ``docs/protocol.md``): program against it. ``message`` is the server's
    human-readable explanation.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ClientClosed(ClientError):
    """The client stopped and will not connect again.

    Because you closed it (``code`` 1000), or because the server closed it with a code that
    retrying cannot fix: ``4003`` (this origin is not allowed), or ``4001`` when the client has
    a fixed ``token`` and no ``token_factory`` to get a new one. ``code`` and ``reason`` are the
    close code and reason; ``__cause__`` is the error behind it, if any.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"notifykit client stopped: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason
