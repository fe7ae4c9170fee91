"""The router: which connections this instance holds under which routing keys, the propagator
subscriptions that follow them, and the delivery of every payload received to them.

It is the hub's receiving half (:class:`~notifykit.hub.Hub` owns one): the propagator calls
:meth:`Router.deliver` for every payload; :meth:`Router.catch_up` registers a connection
under keys (subscribing the keys nobody here held yet, merging concurrent waits for the same
key) and hands it what it missed; :meth:`Router.leave` and :meth:`Router.unsubscribe_orphans`
undo that. Nothing here knows about presence, publishing or lifecycles.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from .envelope import unpack
from .errors import PropagationError
from .recovery import Held, Registration, catch_up
from .wire import CloseCode, Position, with_position

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Callable, Iterable, Mapping

    from .connection import Connection
    from .metrics import LatencyHistogram
    from .protocols import Propagator, Receiver, SocketState

__all__ = ["Router"]

logger = logging.getLogger("notifykit.hub")


class _Pending:
    """A subscription in flight that other connections for the same key wait on."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: BaseException | None = None

    async def wait(self) -> None:
        await self.done.wait()
        if self.error is not None:
            reason = str(self.error) or type(self.error).__name__
            raise PropagationError(f"subscription failed: {reason}") from self.error


class Router:
    """Routes payloads to the connections registered under their keys (see the module
    docstring). ``subscribe_timeout`` bounds a subscription and a history read;
    ``cleanup_timeout`` an unsubscription; ``replay_limit`` the entries replayed per stream."""

    def __init__(
        self,
        propagator: Propagator,
        state: SocketState,
        *,
        metrics: Counter[str],
        latency: LatencyHistogram,
        subscribe_timeout: float,
        cleanup_timeout: float,
        replay_limit: int,
    ) -> None:
        self.propagator = propagator
        self.state = state
        self.metrics = metrics
        self.latency = latency
        self._subscribe_timeout = subscribe_timeout
        self._cleanup_timeout = cleanup_timeout
        self._replay_limit = replay_limit
        self._pending: dict[str, _Pending] = {}
        # Connections joining a key's stream: what arrives live for them is held until their
        # catch-up (notifykit.recovery) decides what they get.
        self._joining: dict[str, dict[Receiver, Held]] = {}
        # The last payload unpacked: a publish to several keys hands the same (unstamped)
        # payload object for each key in-process, which is then decoded once, not per key.
        self._unpacked: tuple[bytes, str | None, Position | None, str] = (b"", None, None, "")

    # --- receiving ------------------------------------------------------------------------

    def deliver(self, key: str, payload: bytes) -> None:
        members = self.state.members(key)
        if not members:
            return
        last, exclude, position, frame = self._unpacked
        fresh = payload is not last
        if fresh:
            try:
                exclude, position, frame = unpack(payload)
            except ValueError:
                self.metrics["malformed_payloads"] += 1
                logger.warning("skipped a malformed payload on key %r", key)
                return
            if position is not None:  # a stamped payload belongs to this key alone
                frame = with_position(frame, key, position)
            self._unpacked = (payload, exclude, position, frame)
        joining = self._joining.get(key) if self._joining else None
        if exclude is None and joining is None:  # the hot path
            for connection in members:
                connection.offer(frame)
            sent = len(members)
        else:
            sent = 0
            for connection in members:
                if connection.id == exclude:
                    continue
                if joining is not None and (held := joining.get(connection)) is not None:
                    held.append((position, frame))
                    if len(held) > held.limit:
                        connection.close(CloseCode.SLOW_CONSUMER, "slow consumer: too much held")
                    continue
                connection.offer(frame)
                sent += 1
        self.metrics["frames_delivered"] += sent
        if fresh:  # per payload, sampled (an in-process publish to several keys: the first)
            latency = self.latency
            latency.countdown -= 1
            if latency.countdown <= 0:
                latency.observe_frame(frame)

    def frame_of(self, key: str, payload: bytes) -> str | None:
        """The frame of a stamped payload read from ``key``'s history (None if malformed)."""
        try:
            _, position, frame = unpack(payload)
        except ValueError:
            self.metrics["malformed_payloads"] += 1
            return None
        return frame if position is None else with_position(frame, key, position)

    # --- joining and leaving ----------------------------------------------------------------

    async def catch_up(
        self,
        connection: Connection,
        keys: tuple[str, ...],
        resume: Mapping[str, Position] | None,
        greeting: Callable[[Registration], str] | None,
    ) -> Registration:
        """Join ``keys``, holding what arrives live, read their history, wait for the
        propagator's barrier, then hand the connection its greeting, what it missed and what
        was held — with no await in between, so nothing can slip in out of order."""
        held: dict[str, Held] = {}
        for key in keys:
            held[key] = self._joining.setdefault(key, {}).setdefault(
                connection, Held(connection.queue_size)
            )
        try:
            try:
                await self._join(connection, keys)
                after = {
                    key: (resume[key].offset if resume and key in resume else None) for key in keys
                }
                with anyio.fail_after(self._subscribe_timeout):
                    streams = await self.propagator.read(after, self._replay_limit)
                    if streams:
                        await self.propagator.barrier(keys)
            except (PropagationError, TimeoutError) as exc:
                self.leave(connection, keys)
                if isinstance(exc, TimeoutError):
                    raise PropagationError("reading history timed out") from exc
                raise
            registration = catch_up(keys, streams, resume, held, self.frame_of)
            if greeting is not None:
                connection.offer(greeting(registration), bounded=False)
            for frame in registration.frames:
                connection.offer(frame, bounded=False)
        finally:
            for key in keys:
                joining = self._joining.get(key)
                if joining is not None:
                    joining.pop(connection, None)
                    if not joining:
                        del self._joining[key]
        return registration

    def leave(self, connection: Connection, keys: Iterable[str]) -> None:
        """Take ``connection`` out of routing under ``keys`` (no I/O). Keys it leaves empty
        stay in ``connection.keys``, for :meth:`unsubscribe_orphans`. Idempotent."""
        for key in keys:
            if (
                key in connection.keys
                and connection in self.state.members(key)
                and not self.state.remove(key, connection)
            ):
                connection.keys.discard(key)

    async def unsubscribe_orphans(self, connection: Connection, keys: Iterable[str]) -> None:
        """Unsubscribe those of ``keys`` that ``connection`` left empty, bounded in time."""
        gone = [key for key in keys if key in connection.keys and not self.state.members(key)]
        connection.keys.difference_update(keys)
        if not gone:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._cleanup_timeout):
            try:
                await self.propagator.unsubscribe(gone)
            except PropagationError as exc:
                logger.warning("unsubscribe from %s failed: %s", gone, exc)

    async def _join(self, connection: Connection, keys: Iterable[str]) -> None:
        new: list[str] = []
        waits: list[_Pending] = []
        for key in keys:
            if key in connection.keys:
                continue
            connection.keys.add(key)
            if self.state.add(key, connection):
                new.append(key)
            elif (pending := self._pending.get(key)) is not None:
                waits.append(pending)
        if new:
            pending = _Pending()
            for key in new:
                self._pending[key] = pending
            # Shielded: a connection that leaves mid-subscribe must not leave others waiting
            # on a subscription in an unknown state.
            with anyio.CancelScope(shield=True):
                try:
                    with anyio.fail_after(self._subscribe_timeout):
                        await self.propagator.subscribe(new)
                except (PropagationError, TimeoutError) as exc:
                    pending.error = exc
                finally:
                    for key in new:
                        if self._pending.get(key) is pending:
                            del self._pending[key]
                    pending.done.set()
            waits.append(pending)
        for pending in waits:
            await pending.wait()
