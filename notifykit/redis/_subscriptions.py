"""The subscriptions of one pub/sub connection, sans I/O: commands out, replies in.

:class:`Subscriptions` knows which channels are *wanted*, which the server will hold once the
commands already written have run (*sent*), and which it has *confirmed*. :meth:`next_commands`
turns every channel touched since the last call into as few ``(S)SUBSCRIBE`` and
``(S)UNSUBSCRIBE`` commands as possible; :meth:`on_reply` and :meth:`on_error` match Redis's
answers to those commands exactly — Redis answers once per channel, in order — and return what
they mean as an event: :class:`Confirmed`, :class:`Refused`, :class:`Lost` (a subscription the
server dropped or redirected), :class:`Pong`, :class:`Unexpected`, or None.

Anything unexplained raises :class:`Desync`: the connection's state is in doubt, and the caller
starts a new connection (which subscribes to everything wanted again).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from redis.crc import key_slot

from ._connection import pack
from ._errors import describe, is_redirect

if TYPE_CHECKING:
    from collections.abc import Iterable

    from redis.exceptions import ResponseError

__all__ = [
    "Confirmed",
    "Desync",
    "Lost",
    "Pong",
    "Refused",
    "Reply",
    "Subscriptions",
    "Unexpected",
]

_SUB, _UNSUB, _PING = 0, 1, 2
_MAX_CHANNELS_PER_COMMAND = 1000
_PING_COMMAND = pack(b"PING")


class Desync(Exception):
    """The connection's replies no longer match what was asked: reconnect and resubscribe."""


@dataclass(frozen=True, slots=True)
class Confirmed:
    """The server confirmed the subscription to ``channel``, which is still wanted."""

    channel: bytes


@dataclass(frozen=True, slots=True)
class Refused:
    """The server refused to subscribe to wanted ``channels`` (an ACL error, say)."""

    channels: list[bytes]
    error: ResponseError


@dataclass(frozen=True, slots=True)
class Lost:
    """The server dropped or redirected wanted ``channels`` (a cluster slot moved)."""

    channels: list[bytes]


@dataclass(frozen=True, slots=True)
class Pong:
    """The server answered a ``PING`` and still holds what it should."""


@dataclass(frozen=True, slots=True)
class Unexpected:
    """A reply that answers nothing asked (logged and skipped; the state is not in doubt)."""

    reply: object


Reply: TypeAlias = Confirmed | Refused | Lost | Pong | Unexpected
"""What a reply from the server means."""

_PONG = Pong()


class _Command:
    """A command in flight and how many of its per-channel replies have arrived."""

    __slots__ = ("channels", "kind", "position")

    def __init__(self, kind: int, channels: list[bytes]) -> None:
        self.kind = kind
        self.channels = channels
        self.position = 0


class Subscriptions:
    """What one connection holds and what it should hold (``sharded``: ``SSUBSCRIBE``)."""

    def __init__(self, *, sharded: bool) -> None:
        self.wanted: set[bytes] = set()
        self.active = False
        """True while a connection runs; between connections nothing is tracked but
        :attr:`wanted`, and :meth:`begin` starts over from it."""
        self._sharded = sharded
        if sharded:
            self._commands = (b"SSUBSCRIBE", b"SUNSUBSCRIBE")
            self._replies = (b"ssubscribe", b"sunsubscribe")
        else:
            self._commands = (b"SUBSCRIBE", b"UNSUBSCRIBE")
            self._replies = (b"subscribe", b"unsubscribe")
        # What the server holds once every command written so far has run, what it has
        # confirmed, and how many commands in flight name each channel.
        self._sent: set[bytes] = set()
        self._confirmed: set[bytes] = set()
        self._inflight: dict[bytes, int] = {}
        self._fifo: deque[_Command] = deque()
        self._dirty: set[bytes] = set()
        self._backlog: set[bytes] = set()  # wanted when this connection began, not yet confirmed
        self._ping_wanted = False
        self.lost_subscriptions = 0
        self.unexpected_replies = 0

    # --- what the owner wants -------------------------------------------------------------

    def want(self, channel: bytes) -> bool:
        """Add ``channel`` to the wanted set; True if the server already confirmed it."""
        if channel in self.wanted:
            return channel in self._confirmed
        self.wanted.add(channel)
        if channel in self._confirmed:  # unwanted and wanted again before the writer ran
            return True
        self._touch(channel)
        return False

    def unwant(self, channel: bytes) -> None:
        """Remove ``channel`` from the wanted set."""
        if channel in self.wanted:
            self.wanted.discard(channel)
            self._backlog.discard(channel)
            self._touch(channel)

    def resync(self, channels: Iterable[bytes]) -> None:
        """Subscribe again to those of ``channels`` still wanted (the server dropped them)."""
        for channel in channels:
            if channel in self.wanted:
                self._touch(channel)

    def request_ping(self) -> None:
        """Add a ``PING`` to the next commands."""
        self._ping_wanted = True

    @property
    def restored(self) -> bool:
        """True once every channel wanted when this connection began is confirmed (channels
        wanted later do not count: a new subscription is not an outage)."""
        return self.active and not self._backlog

    @property
    def has_work(self) -> bool:
        """True if :meth:`next_commands` would return something."""
        return bool(self._dirty) or self._ping_wanted

    def _touch(self, channel: bytes) -> None:
        if self.active:
            self._dirty.add(channel)

    # --- a connection's lifetime ----------------------------------------------------------

    def begin(self) -> None:
        """A new connection holds nothing yet: everything wanted is to be subscribed."""
        self.end()
        self.active = True
        self._dirty = set(self.wanted)
        self._backlog = set(self.wanted)

    def end(self) -> None:
        """The connection is gone, and with it every subscription."""
        self.active = False
        self._sent.clear()
        self._confirmed.clear()
        self._inflight.clear()
        self._fifo.clear()
        self._dirty = set()
        self._backlog = set()
        self._ping_wanted = False

    # --- commands out ---------------------------------------------------------------------

    def next_commands(self) -> list[bytes]:
        """The commands that bring the server to :attr:`wanted` (and a pending ``PING``)."""
        commands: list[bytes] = []
        dirty = self._dirty
        if dirty:
            self._dirty = set()
            wanted, sent = self.wanted, self._sent
            leave = [c for c in dirty if c not in wanted and c in sent]
            join = [c for c in dirty if c in wanted and c not in sent]
            for group in self._groups(leave):
                commands.append(pack(self._commands[1], *group))
                self._fifo.append(_Command(_UNSUB, group))
                for channel in group:
                    sent.discard(channel)
                    self._confirmed.discard(channel)
                    self._inflight[channel] = self._inflight.get(channel, 0) + 1
            for group in self._groups(join):
                commands.append(pack(self._commands[0], *group))
                self._fifo.append(_Command(_SUB, group))
                for channel in group:
                    sent.add(channel)
                    self._inflight[channel] = self._inflight.get(channel, 0) + 1
        if self._ping_wanted:
            self._ping_wanted = False
            commands.append(_PING_COMMAND)
            self._fifo.append(_Command(_PING, []))
        return commands

    def _groups(self, channels: list[bytes]) -> list[list[bytes]]:
        """Split into commands: at most 1000 channels each and, when sharded, one slot each
        (Redis refuses an ``SSUBSCRIBE`` across slots)."""
        if not channels:
            return []
        if self._sharded:
            by_slot: dict[int, list[bytes]] = {}
            for channel in channels:
                by_slot.setdefault(key_slot(channel), []).append(channel)
            lists: Iterable[list[bytes]] = by_slot.values()
        else:
            lists = (channels,)
        size = _MAX_CHANNELS_PER_COMMAND
        return [part[i : i + size] for part in lists for i in range(0, len(part), size)]

    # --- replies in -----------------------------------------------------------------------

    def on_reply(self, reply: object) -> Reply | None:
        """Account for a reply that is not a message; what it means, if anything."""
        if type(reply) is list:
            if len(reply) == 3:
                kind, channel, count = reply
                if kind == self._replies[0]:
                    return self._on_subscribed(channel, count)
                if kind == self._replies[1]:
                    return self._on_unsubscribed(channel, count)
            elif len(reply) == 2 and reply[0] == b"pong":
                return self._on_pong(subscribed=True)
        elif reply == b"PONG":
            return self._on_pong(subscribed=False)
        self.unexpected_replies += 1
        return Unexpected(reply)

    def _head(self, kind: int, channel: bytes | None = None) -> _Command | None:
        """The oldest command in flight, if it is of ``kind`` and expects ``channel`` next."""
        if not self._fifo:
            return None
        head = self._fifo[0]
        if head.kind != kind or (channel is not None and head.channels[head.position] != channel):
            return None
        return head

    def _advance(self, head: _Command, channel: bytes) -> bool:
        """Count one reply to ``head`` for ``channel``; True if no command for it is left."""
        head.position += 1
        if head.position == len(head.channels):
            self._fifo.popleft()
        left = self._inflight.get(channel, 1) - 1
        if left > 0:
            self._inflight[channel] = left
            return False
        self._inflight.pop(channel, None)
        return True

    def _on_subscribed(self, channel: bytes, count: int) -> Confirmed | None:
        head = self._head(_SUB, channel)
        if head is None:
            raise Desync(f"Redis confirmed a subscription to {channel!r} nobody asked for")
        event = None
        if self._advance(head, channel) and channel in self._sent:
            self._confirmed.add(channel)
            self._backlog.discard(channel)
            event = Confirmed(channel)
        self._check_count(count)
        return event

    def _on_unsubscribed(self, channel: bytes, count: int) -> Lost | None:
        head = self._head(_UNSUB, channel)
        event = None
        if head is not None:
            self._advance(head, channel)
        else:
            # Not ours: the server dropped the subscription (a cluster slot moved away).
            self._sent.discard(channel)
            self._confirmed.discard(channel)
            self.lost_subscriptions += 1
            if channel in self.wanted:
                event = Lost([channel])
        self._check_count(count)
        return event

    def _check_count(self, count: int) -> None:
        if not self._fifo and count != len(self._sent):
            self.lost_subscriptions += abs(len(self._sent) - count)
            raise Desync(f"Redis holds {count} subscriptions, {len(self._sent)} expected")

    def _on_pong(self, *, subscribed: bool) -> Pong:
        if self._head(_PING) is None:
            raise Desync("Redis answered a PING nobody sent")
        self._fifo.popleft()
        if not subscribed and self._sent and not self._fifo:
            self.lost_subscriptions += len(self._sent)
            raise Desync("the connection lost its subscriptions")
        return _PONG

    def on_error(self, error: ResponseError) -> Refused | Lost | None:
        """Account for an error reply, which answers the oldest command in flight; the wanted
        channels it refused (or, for a redirection, lost)."""
        head = self._fifo[0] if self._fifo else None
        if head is None or head.kind == _PING or head.position != 0:
            raise Desync(f"Redis replied with an error out of turn: {describe(error)}")
        if head.kind == _UNSUB and not is_redirect(error):
            raise Desync(f"Redis refused to unsubscribe: {describe(error)}")
        # A refused SUBSCRIBE changed nothing; an UNSUBSCRIBE redirected elsewhere (the slot
        # moved away, taking its subscriptions with it) has nothing left to undo.
        self._fifo.popleft()
        for channel in head.channels:
            left = self._inflight.get(channel, 1) - 1
            if left > 0:
                self._inflight[channel] = left
            else:
                self._inflight.pop(channel, None)
                if head.kind == _SUB:
                    self._sent.discard(channel)
        if head.kind == _UNSUB:
            return None
        refused = [c for c in head.channels if c in self.wanted and c not in self._sent]
        if not refused:
            return None
        return Lost(refused) if is_redirect(error) else Refused(refused, error)
