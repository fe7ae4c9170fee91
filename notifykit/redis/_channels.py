"""Names: the one place where a routing key becomes a Redis channel, a stream and a meta key.

Every routing key (``u:42``, ``t:news``, ``auth``, ``all``) has three names, the same on every
instance sharing a prefix::

    <prefix>:{<key>}            the channel notifications are published to
    <prefix>:{<key>}:history    the stream of its history (a Redis stream)
    <prefix>:{<key>}:meta       its epoch and last offset (a hash)

The braces are a Redis Cluster hash tag: the slot of each name is that of the text between the
first ``{`` and the first ``}`` after it, which is the same for all three names — the key itself,
or, for a key that holds a ``}``, the part of it before that ``}``. So a stream, its counter and
its channel always share one slot, and the script that appends to one and publishes to the
other runs on one master. (Every key notifykit makes starts with a letter, so the tag is never
empty.) Subscribing, publishing, reading history and telling a late message from a stray one
all go through :class:`ChannelNames`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["ChannelNames"]


class ChannelNames:
    """The names of one prefix: ``channel("u:42") == b"notifykit:{u:42}"``.

    ``prefix`` is a non-empty word; with ``cluster`` it must not contain ``{`` or ``}``, so
    that a name's hash slot depends on its key alone (a hash tag in the prefix would put
    every channel in one slot). Keys are encoded as UTF-8, lone surrogates included: any
    ``str`` is a key. Raises :class:`~notifykit.errors.ConfigurationError` for a bad prefix.
    """

    __slots__ = ("_open", "prefix")

    def __init__(self, prefix: str, *, cluster: bool = False) -> None:
        if not isinstance(prefix, str) or not prefix or any(c.isspace() for c in prefix):
            raise ConfigurationError("the Redis channel prefix must be a non-empty word")
        if cluster and ("{" in prefix or "}" in prefix):
            raise ConfigurationError("a cluster channel prefix must not contain { or }")
        self.prefix = prefix.encode("utf-8") + b":"
        """What every name starts with (``b"notifykit:"``)."""
        self._open = self.prefix + b"{"

    def channel(self, key: str) -> bytes:
        """The channel of routing key ``key``."""
        return self._open + key.encode("utf-8", "surrogatepass") + b"}"

    def channels(self, keys: Iterable[str]) -> list[bytes]:
        """The channels of ``keys``, in order."""
        start = self._open
        return [start + key.encode("utf-8", "surrogatepass") + b"}" for key in keys]

    def stream(self, key: str) -> bytes:
        """The stream holding ``key``'s history (same slot as its channel)."""
        return self._open + key.encode("utf-8", "surrogatepass") + b"}:history"

    def meta(self, key: str) -> bytes:
        """The hash holding ``key``'s epoch and last offset (same slot as its channel)."""
        return self._open + key.encode("utf-8", "surrogatepass") + b"}:meta"

    def is_ours(self, channel: object) -> bool:
        """True if ``channel`` is a channel of this prefix (wanted now or not)."""
        return isinstance(channel, bytes) and channel.startswith(self._open)
