"""History on Redis: the two Lua scripts, and the commands that run them.

Each routing key has a stream and a meta hash beside its channel (see
:mod:`~._channels`). One script appends and publishes, atomically, so that offsets and live
delivery always agree; the other reads. Both run with ``EVALSHA`` (loaded once per connection,
``NOSCRIPT`` answered by loading them again) and touch only the three names of one key, which
share a cluster slot.

``APPEND`` (KEYS: meta, stream, channel; ARGV: epoch candidate, size, ttl in ms, payload):

* the stream's epoch is the meta hash's ``epoch``, or — when there is none (a new stream, or one
  whose history was lost) — the caller's candidate, eight random hex digits; creating it clears
  any stream left over, so offsets start again at 1;
* the offset is ``HINCRBY meta last 1``;
* the entry is ``XADD``-ed with the id ``<offset>-<Redis time in ms>`` (reads by offset are exact,
  and the id tells its age) and the field ``p`` holding the payload as published, trimmed to
  ``size`` entries (``MAXLEN``);
* both keys expire between ``ttl`` and twice ``ttl`` after the last append (or read): an
  append refreshes their expiry only once it falls below ``ttl`` (one ``PTTL`` instead of two
  ``PEXPIRE`` per append); an idle stream's history and its epoch go together, so a position
  from before can never match again, and entries older than ``ttl`` are never read;
* the payload is published (``SPUBLISH`` on a cluster) stamped as
  :func:`notifykit.envelope.stamp` does it: ``#<offset> <epoch>\\n<payload>``.

``READ`` (KEYS: meta, stream; ARGV: epoch candidate, size, ttl in ms, after or -1, limit) creates
the epoch if the stream has none (a position handed to a client must be a real one), refreshes
the expiry, drops entries older than the ttl (a binary search over the offsets, which are
contiguous, then ``XTRIM MINID``), and returns ``[epoch, last, first, id, payload, id,
payload...]`` with at most ``limit`` entries after ``after``.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from ..envelope import stamp
from ..errors import ConfigurationError, PropagationError
from ..model import StreamHistory
from ..wire import Position
from ._connection import pack

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._channels import ChannelNames

__all__ = ["APPEND", "READ", "SHARDED_APPEND", "HistoryCommands", "HistorySettings", "parse_read"]

_APPEND = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 'last', 1)
local now = redis.call('TIME')
local id = string.format('%d-%d', offset, now[1] * 1000 + math.floor(now[2] / 1000))
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], id, 'p', ARGV[4])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3] * 2)
  redis.call('PEXPIRE', KEYS[2], ARGV[3] * 2)
end
redis.call('{publish}', KEYS[3], string.format('#%d ', offset) .. epoch .. '\\n' .. ARGV[4])
return offset
"""

READ = """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'last')
local epoch, last = meta[1], tonumber(meta[2] or '0')
if not epoch then
  epoch = ARGV[1]
  last = 0
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'last', 0)
end
local ttl = tonumber(ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
local first = last + 1
local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
if head then
  local now = redis.call('TIME')
  local cutoff = now[1] * 1000 + math.floor(now[2] / 1000) - ttl
  local offset, time = string.match(head[1], '^(%d+)-(%d+)$')
  first = tonumber(offset)
  if tonumber(time) < cutoff then
    local low, high = first + 1, last + 1
    while low < high do
      local middle = math.floor((low + high) / 2)
      local id = string.format('%d', middle)
      local entry = redis.call('XRANGE', KEYS[2], id, id)[1]
      if entry and tonumber(string.match(entry[1], '-(%d+)$')) >= cutoff then
        high = middle
      else
        low = middle + 1
      end
    end
    redis.call('XTRIM', KEYS[2], 'MINID', string.format('%d', low))
    first = low
  end
  first = math.max(first, last - tonumber(ARGV[2]) + 1)
end
local out = {epoch, last, first}
local after, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
if after >= 0 and limit > 0 and math.max(after + 1, first) <= last then
  local start = string.format('%d', math.max(after + 1, first))
  for _, entry in ipairs(redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', limit)) do
    out[#out + 1] = entry[1]
    out[#out + 1] = entry[2][2]
  end
end
return out
"""

APPEND = _APPEND.replace("{publish}", "PUBLISH")
SHARDED_APPEND = _APPEND.replace("{publish}", "SPUBLISH")


def _sha(script: str) -> bytes:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest().encode()


class HistorySettings:
    """How much history to keep: ``size`` entries per stream (0: none, plain ``PUBLISH``),
    entries and idle streams no older than ``ttl`` seconds. Raises
    :class:`~notifykit.errors.ConfigurationError` for unusable values."""

    __slots__ = ("size", "ttl")

    def __init__(self, size: int, ttl: float) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ConfigurationError(f"history_size must be 0 or more, not {size!r}")
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not ttl >= 0.001:
            raise ConfigurationError(f"history_ttl must be seconds above 0, not {ttl!r}")
        self.size = size
        self.ttl = float(ttl)

    @property
    def enabled(self) -> bool:
        """False when no history is kept."""
        return self.size > 0


class HistoryCommands:
    """Encodes the ``EVALSHA`` commands of one propagator's history (``sharded``: a cluster).

    Every command is three parts, as the publisher sends them: the head, the payload (or
    nothing) and the tail — so that a payload is never copied into a bigger buffer.
    """

    __slots__ = ("_append_head", "_read_head", "_settings_args", "names", "scripts", "settings")

    def __init__(self, names: ChannelNames, settings: HistorySettings, *, sharded: bool) -> None:
        self.names = names
        self.settings = settings
        append = SHARDED_APPEND if sharded else APPEND
        self.scripts: tuple[bytes, ...] = (append.encode(), READ.encode())
        """The bodies to ``SCRIPT LOAD`` on every connection that runs these commands."""
        self._append_head = b"*10\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n$1\r\n3\r\n" % _sha(append)
        self._read_head = _sha(READ)
        size = b"%d" % settings.size
        ttl = b"%d" % max(1, round(settings.ttl * 1000))
        self._settings_args = b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(size), size, len(ttl), ttl)

    def append(self, keys: Sequence[str], payload: bytes, epoch: bytes) -> list[bytes]:
        """The commands appending ``payload`` to each key's stream and publishing it stamped;
        ``epoch`` is the candidate for streams that have none (eight hex digits)."""
        start = self.names.prefix + b"{"
        head = self._append_head
        middle = b"$8\r\n%b\r\n%b$%d\r\n" % (epoch, self._settings_args, len(payload))
        parts: list[bytes] = []
        for key in keys:
            name = start + key.encode("utf-8", "surrogatepass")
            size = len(name)
            parts.append(
                b"%b$%d\r\n%b}:meta\r\n$%d\r\n%b}:history\r\n$%d\r\n%b}\r\n%b"
                % (head, size + 6, name, size + 9, name, size + 1, name, middle)
            )
            parts.append(payload)
            parts.append(b"\r\n")
        return parts

    def read(self, key: str, after: int | None, limit: int, epoch: bytes) -> list[bytes]:
        """The command reading ``key``'s stream: up to ``limit`` entries after ``after``."""
        names = self.names
        settings = self.settings
        command = pack(
            b"EVALSHA",
            self._read_head,
            b"2",
            names.meta(key),
            names.stream(key),
            epoch,
            b"%d" % settings.size,
            b"%d" % max(1, round(settings.ttl * 1000)),
            b"%d" % (-1 if after is None else after),
            b"%d" % max(0, limit),
        )
        return [command, b"", b""]


def parse_read(reply: object, after: int | None) -> StreamHistory:
    """The :class:`~notifykit.model.StreamHistory` of a ``READ`` reply (entries stamped).

    Raises :class:`~notifykit.errors.PropagationError` for a reply the script cannot give.
    """
    try:
        if not isinstance(reply, list) or len(reply) < 3 or len(reply) % 2 == 0:
            raise TypeError("not a READ reply")
        epoch = reply[0].decode("ascii")
        last, first = int(reply[1]), int(reply[2])
        entries = []
        for index in range(3, len(reply), 2):
            offset = int(reply[index].partition(b"-")[0])
            entries.append((offset, stamp(reply[index + 1], Position(epoch, offset))))
    except (AttributeError, IndexError, TypeError, ValueError, UnicodeDecodeError):
        raise PropagationError(f"Redis sent a malformed history reply: {reply!r:.100}") from None
    taken = tuple(entries)
    complete = after is None or last <= max(after, taken[-1][0] if taken else 0)
    return StreamHistory(epoch, last, first, taken, complete)
