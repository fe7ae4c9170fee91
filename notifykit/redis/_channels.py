"""Channel names: the one place where a routing key becomes a Redis channel.

Every routing key (``u:42``, ``t:news``, ``auth``, ``all``) is one channel, ``<prefix>:<key>``
(``notifykit:u:42``), the same on every instance sharing a prefix. Subscribing, publishing and
telling a late message from a stray one all go through :class:`ChannelNames`; names of anything
else that must live beside a channel (in the same Redis Cluster hash slot) belong here too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["ChannelNames"]


class ChannelNames:
    """The channels of one prefix: ``channel("u:42") == b"notifykit:u:42"``.

    ``prefix`` is a non-empty word; with ``cluster`` it must not contain ``{`` or ``}``, so
    that a channel's hash slot depends on its key alone (a hash tag in the prefix would put
    every channel in one slot). Keys are encoded as UTF-8, lone surrogates included: any
    ``str`` is a key. Raises :class:`~notifykit.errors.ConfigurationError` for a bad prefix.
    """

    __slots__ = ("prefix",)

    def __init__(self, prefix: str, *, cluster: bool = False) -> None:
        if not isinstance(prefix, str) or not prefix or any(c.isspace() for c in prefix):
            raise ConfigurationError("the Redis channel prefix must be a non-empty word")
        if cluster and ("{" in prefix or "}" in prefix):
            raise ConfigurationError("a cluster channel prefix must not contain { or }")
        self.prefix = prefix.encode("utf-8") + b":"
        """What every channel starts with (``b"notifykit:"``)."""

    def channel(self, key: str) -> bytes:
        """The channel of routing key ``key``."""
        return self.prefix + key.encode("utf-8", "surrogatepass")

    def channels(self, keys: Iterable[str]) -> list[bytes]:
        """The channels of ``keys``, in order."""
        prefix = self.prefix
        return [prefix + key.encode("utf-8", "surrogatepass") for key in keys]

    def is_ours(self, channel: object) -> bool:
        """True if ``channel`` is a channel of this prefix (wanted now or not)."""
        return isinstance(channel, bytes) and channel.startswith(self.prefix)
