"""Exactly once, in offset order, per key: what stands between the subscriber connections and
``deliver`` when history is on.

Redis pub/sub loses what is published while a subscriber connection is down, and a history
read that fills such a hole overlaps what arrives live afterwards. :class:`Sequencer` remembers,
for each subscribed key, the last position it delivered (epoch, offset) and passes on only the
next one:

* a message at ``offset + 1`` of the same epoch goes straight through (the hot path: a few
  byte comparisons);
* one at or below ``offset`` is a duplicate and is dropped;
* one further on, or of another epoch (the stream was reset: its entries start at 1 again),
  opens a **gap**: the key's messages are held while the missing entries are read from its
  stream, delivered in order, then what was held (duplicates dropped);
* when a subscription is confirmed again (the connection came back, or a cluster slot moved),
  the key is **caught up** the same way from the last position delivered;
* a new subscription is **seeded**: its position is read, and once a ``PING`` sent after that
  read is answered (everything published before it has arrived), a key that received nothing
  meanwhile starts at that position — so that a reconnection before its first message still
  knows where to catch up from.

Entries that fell out of retention meanwhile cannot come back: they are counted
(``history_gaps_lost``) and delivery goes on after them. What is held per key is bounded
(``hold_limit``): beyond it, the catch-up is abandoned and what was held is delivered.
Unstamped payloads (from a publisher without history) pass through untouched.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from typing import TYPE_CHECKING

from ..errors import PropagationError
from ._connection import backoff
from ._errors import describe

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Mapping

    from ..model import StreamHistory
    from ..protocols import Deliver
    from ._connection import Settings

__all__ = ["Sequencer"]

logger = logging.getLogger("notifykit.redis")

_MAX_KEYS_PER_READ = 500


class _Key:
    """What is known of one subscribed key: the last position delivered (``epoch`` None
    before the first), and, while a read is on its way, what arrived meanwhile (``held``)."""

    __slots__ = ("epoch", "expect", "generation", "held", "offset", "tail")

    def __init__(self) -> None:
        self.epoch: bytes | None = None
        self.offset = 0
        self.expect: bytes | None = None
        """The stamp the next message starts with (None before the first)."""
        self.tail = b""  # what follows the offset in a stamp: b" <epoch>\n"
        self.held: list[tuple[bytes, int, bytes]] | None = None
        self.generation = 0

    def at(self, epoch: bytes, offset: int) -> None:
        """Delivered up to ``offset`` of ``epoch``."""
        self.epoch, self.offset = epoch, offset
        self.tail = b" %b\n" % epoch
        self.expect = b"#%d%b" % (offset + 1, self.tail)


def _position(payload: bytes) -> tuple[bytes, int] | None:
    """``(epoch, offset)`` of a stamped payload, None if it is not stamped (or malformed)."""
    if payload[:1] != b"#":
        return None
    cut = payload.find(b"\n")
    space = payload.find(b" ", 1, cut)
    if space < 2:
        return None
    try:
        offset = int(payload[1:space])
    except ValueError:
        return None
    return payload[space + 1 : cut], offset


class Sequencer:
    """Delivers each subscribed key's messages exactly once, in offset order (see the module
    docstring). ``read`` is the propagator's history read; ``ping`` returns once everything
    published to the given keys before the call has arrived on their subscriber
    connections."""

    def __init__(
        self,
        deliver: Deliver,
        read: Callable[[Mapping[str, int | None], int], Awaitable[dict[str, StreamHistory]]],
        ping: Callable[[Collection[str]], Awaitable[None]],
        settings: Settings,
        *,
        limit: int,
        hold_limit: int = 10_000,
    ) -> None:
        self._deliver = deliver
        self._read = read
        self._ping = ping
        self._settings = settings
        self._limit = limit
        self._hold_limit = hold_limit
        self._keys: dict[str, _Key] = {}
        self._resync: dict[str, tuple[int, bytes | None, int]] = {}
        self._seed: set[str] = set()
        self._seeding: set[str] = set()  # being read and pinged
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()
        self.duplicates = 0
        self.repaired = 0
        self.lost = 0
        self.catch_ups = 0
        self.overflows = 0
        self.read_failures = 0
        self.deliver_errors = 0

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the task that reads what is missing."""
        self._task = asyncio.create_task(self._run(), name="notifykit-redis-sequencer")

    async def aclose(self) -> None:
        """Stop; nothing is delivered any more. Idempotent."""
        task, self._task = self._task, None
        self._keys.clear()
        self._resync.clear()
        self._seed.clear()
        self._seeding.clear()
        self._progress.set()
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    # --- what the propagator tells ----------------------------------------------------------

    def track(self, keys: Collection[str]) -> None:
        """Keys about to be subscribed (known ones are left as they are)."""
        states = self._keys
        for key in keys:
            if key not in states:
                states[key] = _Key()

    def forget(self, keys: Collection[str]) -> None:
        """Keys unsubscribed: their positions and whatever is held for them go."""
        for key in keys:
            if self._keys.pop(key, None) is not None:
                self._resync.pop(key, None)
                self._seed.discard(key)
        self._progress.set()

    def confirmed(self, key: str) -> None:
        """Redis confirmed the subscription to ``key``: seed it if new, else catch it up
        (whatever was published while it was not subscribed is in its stream)."""
        state = self._keys.get(key)
        if state is None:
            return
        if state.epoch is None and state.held is None:
            self._seed.add(key)
            self._wake.set()
            return
        self.catch_ups += 1
        if state.held is None:
            state.held = []
        self._request(key, state, state.epoch, state.offset)

    def pending(self, keys: Collection[str]) -> bool:
        """True while one of ``keys`` waits for a read: its messages are held, or its
        position is being found (seeded)."""
        states = self._keys
        for key in keys:
            state = states.get(key)
            if state is not None and (
                state.held is not None or key in self._seed or key in self._seeding
            ):
                return True
        return False

    async def settled(self, keys: Collection[str]) -> None:
        """Return once none of ``keys`` waits for a read any more (caught up and seeded)."""
        while self.pending(keys):
            self._progress.clear()
            await self._progress.wait()

    def counters(self) -> dict[str, int]:
        """``history_duplicates`` dropped, entries ``history_repaired`` from a stream,
        ``history_gaps_lost`` (entries gone before they could be read), ``history_catch_ups``,
        ``history_hold_overflows``, ``history_read_failures``, ``history_deliver_errors``
        (a ``deliver`` that raised for an entry read from a stream)."""
        return {
            "history_duplicates": self.duplicates,
            "history_repaired": self.repaired,
            "history_gaps_lost": self.lost,
            "history_catch_ups": self.catch_ups,
            "history_hold_overflows": self.overflows,
            "history_read_failures": self.read_failures,
            "history_deliver_errors": self.deliver_errors,
        }

    # --- the hot path -----------------------------------------------------------------------

    def on_message(self, key: str, payload: bytes) -> None:
        """A message arrived on ``key``'s channel: deliver it if it is the next one."""
        state = self._keys.get(key)
        if state is not None:
            expect = state.expect
            if expect is not None and state.held is None and payload.startswith(expect):
                offset = state.offset + 1
                state.offset = offset
                state.expect = b"#%d%b" % (offset + 1, state.tail)
                self._deliver(key, payload)
                return
        self._arrive(key, state, payload)

    def _arrive(self, key: str, state: _Key | None, payload: bytes) -> None:
        position = _position(payload) if state is not None else None
        if state is None or position is None:
            self._deliver(key, payload)  # not ours to order: untracked, unstamped, malformed
            return
        epoch, offset = position
        if state.held is not None:
            state.held.append((epoch, offset, payload))
            if len(state.held) > self._hold_limit:
                self._overflow(key, state)
            return
        if not self._place(key, state, epoch, offset, payload, None):
            holding = state.held
            if holding is not None:
                holding.append((epoch, offset, payload))

    def _place(
        self,
        key: str,
        state: _Key,
        epoch: bytes,
        offset: int,
        payload: bytes,
        covered: tuple[bytes, int] | None,
    ) -> bool:
        """Deliver, drop, or (False) open a gap for one message. ``covered`` is the position
        up to which a read of the stream just went, when releasing what was held: a gap below
        it cannot be repaired, and another epoch than its own is an incarnation gone."""
        if state.epoch is None:  # the first message of a new subscription
            state.at(epoch, offset)
            self._deliver(key, payload)
            return True
        if epoch == state.epoch:
            if offset <= state.offset:
                self.duplicates += 1
                return True
            if offset > state.offset + 1:
                if covered is None or covered[1] < offset - 1:
                    self._gap(key, state, epoch, state.offset)
                    return False
                self._lose(key, offset - state.offset - 1)
        elif covered is not None:  # published before the stream was reset, read after
            self._lose(key, 1)
            return True
        elif offset > 1:  # a stream reset, and some of its first entries were missed
            self._gap(key, state, epoch, 0)
            return False
        state.at(epoch, offset)
        self._deliver(key, payload)
        return True

    def _lose(self, key: str, count: int) -> None:
        self.lost += count
        logger.warning(
            "lost %d notification(s) of %r: out of retention before they could be read",
            count,
            key,
        )

    def _gap(self, key: str, state: _Key, epoch: bytes, after: int) -> None:
        state.held = []
        self._request(key, state, epoch, after)

    def _request(self, key: str, state: _Key, epoch: bytes | None, after: int) -> None:
        state.generation += 1
        self._resync[key] = (state.generation, epoch, after)
        self._wake.set()

    def _overflow(self, key: str, state: _Key) -> None:
        """Too much held: stop waiting for the read, and deliver what was held."""
        self.overflows += 1
        logger.warning(
            "held more than %d messages of %r while reading its history; delivering them",
            self._hold_limit,
            key,
        )
        self._give_up(key, state)

    def _give_up(self, key: str, state: _Key) -> None:
        """Deliver what is held for ``key`` without the read it waits for."""
        self._resync.pop(key, None)
        state.generation += 1
        held, state.held = state.held or [], None
        for epoch, offset, payload in held:
            if epoch == state.epoch and offset <= state.offset:
                self.duplicates += 1
                continue
            if epoch == state.epoch and offset > state.offset + 1:
                self._lose(key, offset - state.offset - 1)
            state.at(epoch, offset)
            self._safe_deliver(key, payload)
        self._progress.set()

    def _safe_deliver(self, key: str, payload: bytes) -> None:
        try:
            self._deliver(key, payload)
        except Exception:
            self.deliver_errors += 1
            logger.exception("deliver raised for key %r; payload skipped", key)

    # --- reading what is missing -------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while True:
            if not self._resync and not self._seed:
                self._wake.clear()
                await self._wake.wait()
                continue
            resync = dict(list(self._resync.items())[:_MAX_KEYS_PER_READ])
            for key in resync:
                del self._resync[key]
            seeds = [key for key in list(self._seed)[:_MAX_KEYS_PER_READ] if key not in resync]
            self._seed.difference_update(seeds)
            self._seeding.update(seeds)
            try:
                await self._round(resync, seeds)
            except PropagationError as exc:
                self.read_failures += 1
                log = logger.warning if attempt == 0 else logger.debug
                log("cannot read history to catch up: %s; retrying", describe(exc))
                for key, request in resync.items():  # unless superseded meanwhile
                    self._resync.setdefault(key, request)
                for key in seeds:
                    state = self._keys.get(key)
                    if state is not None and state.epoch is None and state.held is None:
                        self._seed.add(key)
                self._seeding.difference_update(seeds)
                await asyncio.sleep(backoff(attempt, self._settings, self._rng))
                attempt += 1
            except Exception:  # a bug: say so, and deliver what was held
                logger.exception("catching up history failed")
                for key in resync:
                    state = self._keys.get(key)
                    if state is not None and state.held is not None:
                        self._give_up(key, state)
            else:
                attempt = 0
            finally:
                self._seeding.difference_update(seeds)
                self._progress.set()

    async def _round(
        self, resync: dict[str, tuple[int, bytes | None, int]], seeds: list[str]
    ) -> None:
        after: dict[str, int | None] = {key: request[2] for key, request in resync.items()}
        after.update(dict.fromkeys(seeds))
        found = await self._read(after, self._limit)
        for key, (generation, epoch, offset) in resync.items():
            state = self._keys.get(key)
            if state is None or state.generation != generation:
                continue  # unsubscribed, or asked again meanwhile
            stream = found.get(key)
            if stream is None:  # no history for it after all
                self._give_up(key, state)
            else:
                self._caught_up(key, state, epoch, offset, stream)
        self._progress.set()
        if seeds:
            try:
                await self._ping(seeds)
            except PropagationError:
                return  # a reconnection seeds them again
            for key in seeds:
                state = self._keys.get(key)
                stream = found.get(key)
                if (
                    state is not None
                    and stream is not None
                    and state.epoch is None
                    and state.held is None
                ):
                    state.at(stream.epoch.encode("ascii"), stream.last)

    def _caught_up(
        self, key: str, state: _Key, epoch: bytes | None, read_after: int, stream: StreamHistory
    ) -> None:
        """Deliver what a read asked for after ``(epoch, read_after)`` found, then what was
        held."""
        current = stream.epoch.encode("ascii")
        if epoch == current:
            start = read_after
        elif state.epoch == current:  # already delivering the current incarnation
            start = state.offset
        elif epoch is None:
            start = stream.last
        else:  # the stream was reset: everything of the new incarnation is missing
            start = 0
        if start < read_after and stream.last > start:
            self._request(key, state, current, start)  # the read began too late
            return
        position = start
        for offset, payload in stream.entries:
            if offset <= position:
                continue
            if offset > position + 1:
                self._lose(key, offset - position - 1)
            position = offset
            state.at(current, offset)
            self.repaired += 1
            self._safe_deliver(key, payload)
        if position < stream.last:
            if not stream.complete:
                self._request(key, state, current, position)
                return
            self._lose(key, stream.last - position)  # trimmed while being read
            position = stream.last
        state.at(current, position)
        held, state.held = state.held or [], None
        covered = (current, stream.last)
        for index, (epoch_, offset_, payload_) in enumerate(held):
            try:
                placed = self._place(key, state, epoch_, offset_, payload_, covered)
            except Exception:
                self.deliver_errors += 1
                logger.exception("deliver raised for key %r; payload skipped", key)
                continue
            if not placed:  # a new gap: it holds the rest
                holding = state.held
                if holding is not None:
                    holding.extend(held[index:])
                return


def new_epoch() -> bytes:
    """A candidate epoch for a stream that has none: eight random hex digits."""
    return secrets.token_hex(4).encode()
