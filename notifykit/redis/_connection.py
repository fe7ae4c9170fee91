"""Opening connections: redis-py's low-level ``Connection``, configured once from a URL.

notifykit talks to Redis through redis-py's asyncio ``Connection`` (handshake, AUTH, TLS,
``SELECT``, hiredis parsing) but not through its clients: the subscriber and the publisher own
their connections and decide themselves when to reconnect, so nothing reconnects behind their
back. Every connection speaks RESP2, whatever the URL or redis-py's default says: RESP2 pub/sub
replies are plain arrays that redis-py hands over untouched, while RESP3 push messages go through
per-message handler machinery we do not need.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from redis.asyncio.connection import Connection, parse_url

from ..errors import ConfigurationError

if TYPE_CHECKING:
    import random
    from collections.abc import Iterable

__all__ = [
    "Endpoint",
    "RedisConnection",
    "Settings",
    "backoff",
    "close_quietly",
    "open_connection",
    "pack",
]


class RedisConnection(Protocol):
    """The part of ``redis.asyncio.connection.AbstractConnection`` notifykit uses, typed."""

    @property
    def is_connected(self) -> bool:
        """True between a successful ``connect()`` and ``disconnect()``."""
        ...

    async def connect(self) -> None:
        """Open the socket and run the handshake (AUTH, SELECT, CLIENT SETNAME...)."""
        ...

    async def disconnect(self, nowait: bool = False) -> None:
        """Close the socket."""
        ...

    async def can_read(self) -> bool:
        """True if data (or EOF) is waiting: an idle connection that can read is unusable."""
        ...

    async def send_packed_command(
        self, command: bytes | Iterable[bytes], check_health: bool = True
    ) -> None:
        """Write already-encoded commands."""
        ...

    async def read_response(
        self,
        disable_decoding: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 - redis-py's signature
        *,
        disconnect_on_error: bool = True,
        push_request: bool | None = False,
    ) -> Any:
        """Read one reply; raise ``ResponseError`` for an error reply."""
        ...


@dataclass(frozen=True, slots=True)
class Settings:
    """The tunables shared by the Redis propagators (see their docstrings)."""

    connect_timeout: float = 5.0
    command_timeout: float = 5.0
    health_check_interval: float = 5.0
    backoff_initial: float = 0.1
    backoff_max: float = 10.0
    max_pending_publishes: int = 10_000
    client_name: str = "notifykit"

    def __post_init__(self) -> None:
        for name in (
            "connect_timeout",
            "command_timeout",
            "health_check_interval",
            "backoff_initial",
            "backoff_max",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        if self.backoff_max < self.backoff_initial:
            raise ConfigurationError("backoff_max must not be smaller than backoff_initial")
        if not isinstance(self.max_pending_publishes, int) or self.max_pending_publishes < 1:
            raise ConfigurationError("max_pending_publishes must be a positive integer")
        if not self.client_name or any(c.isspace() for c in self.client_name):
            raise ConfigurationError("client_name must be a non-empty name without spaces")


class Endpoint:
    """Where one Redis server is, and how to log in: a factory of configured connections.

    Built from a ``redis://``, ``rediss://`` or ``unix://`` URL (user, password, db and
    redis-py's query options such as ``ssl_cert_reqs`` included). :meth:`at` gives the same
    credentials for another node of a cluster.
    """

    __slots__ = ("_class", "_kwargs", "address")

    def __init__(self, connection_class: type[Any], kwargs: dict[str, Any], address: str) -> None:
        self._class = connection_class
        self._kwargs = kwargs
        self.address = address
        """``host:port`` (or the socket path), for logs: never holds the password."""

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        """Parse ``url``; raise :class:`~notifykit.errors.ConfigurationError` if it is unusable."""
        if not isinstance(url, str):
            raise ConfigurationError("the Redis URL must be a string")
        try:
            options: dict[str, Any] = dict(parse_url(url))
        except ValueError as exc:
            raise ConfigurationError(f"invalid Redis URL: {exc}") from None
        connection_class = options.pop("connection_class", Connection)
        if "path" in options:
            address = str(options["path"])
        else:
            options.setdefault("host", "localhost")
            options.setdefault("port", 6379)
            address = f"{options['host']}:{options['port']}"
        return cls(connection_class, options, address)

    @property
    def host(self) -> str | None:
        """The host name, or None for a Unix socket."""
        host = self._kwargs.get("host")
        return None if host is None else str(host)

    @property
    def port(self) -> int | None:
        """The TCP port, or None for a Unix socket."""
        port = self._kwargs.get("port")
        return None if port is None else int(port)

    def at(self, host: str, port: int) -> Endpoint:
        """The same credentials and options for the server at ``host:port`` (database 0)."""
        kwargs = dict(self._kwargs, host=host, port=port)
        kwargs.pop("db", None)
        kwargs.pop("path", None)
        return Endpoint(self._class, kwargs, f"{host}:{port}")

    def new_connection(
        self, settings: Settings, role: str, *, socket_timeout: float | None = None
    ) -> RedisConnection:
        """An unconnected connection named ``<client_name>-<role>`` in ``CLIENT LIST``."""
        kwargs = dict(self._kwargs)
        kwargs.update(
            protocol=2,
            decode_responses=False,
            socket_timeout=socket_timeout,
            socket_connect_timeout=settings.connect_timeout,
            socket_keepalive=True,
            retry_on_timeout=False,
            retry=None,
            health_check_interval=0,
            client_name=f"{settings.client_name}-{role}",
        )
        return cast("RedisConnection", self._class(**kwargs))


async def open_connection(
    endpoint: Endpoint, settings: Settings, role: str, *, socket_timeout: float | None = None
) -> RedisConnection:
    """Connect and log in, within ``settings.connect_timeout`` for the whole handshake.

    Raises what redis-py or the socket raise (callers translate it with
    :func:`~._errors.map_redis_errors`).
    """
    connection = endpoint.new_connection(settings, role, socket_timeout=socket_timeout)
    try:
        async with asyncio.timeout(settings.connect_timeout):
            await connection.connect()
    except BaseException:
        await close_quietly(connection)
        raise
    return connection


async def close_quietly(connection: RedisConnection) -> None:
    """Close ``connection`` without waiting for the peer and without raising."""
    with contextlib.suppress(Exception):  # a broken socket may fail to close; it is gone
        await connection.disconnect(nowait=True)


def backoff(attempt: int, settings: Settings, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): exponential from
    ``backoff_initial``, capped at ``backoff_max``, with the upper half jittered so that many
    instances restarted together do not reconnect in lockstep."""
    ceiling = min(settings.backoff_max, settings.backoff_initial * 2.0 ** min(attempt, 32))
    return ceiling / 2 + rng.random() * ceiling / 2


def pack(*args: bytes) -> bytes:
    """Encode one command as RESP (a multi-bulk of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)
