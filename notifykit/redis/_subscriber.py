"""One subscriber connection to one Redis server, kept subscribed to a wanted set of channels.

The owner edits the wanted set through :meth:`~Subscriber.want` and :meth:`~Subscriber.unwant`,
synchronously and in call order; the bookkeeping is the sans-I/O
:class:`~._subscriptions.Subscriptions`. A supervisor task keeps one *session* alive at a time,
reconnecting with capped, jittered backoff; each session runs three tasks on one connection:

* the **writer** sends what :meth:`Subscriptions.next_commands` says, in one write: a reconnect
  storm of a thousand ``subscribe()`` calls becomes one round trip;
* the **reader** reads every reply as it arrives and hands messages to ``deliver`` inline
  through a ``channel -> key`` table (no parsing, no allocation beyond hiredis's own); other
  replies go to the bookkeeping, and what they mean to the owner's
  :class:`SubscriberListener`;
* the **watchdog** sends a ``PING`` every ``health_check_interval`` and ends the session if no
  answer comes within ``command_timeout`` (a silently dead socket) or if the answer shows the
  connection has left pub/sub mode (it lost its subscriptions).

A new session subscribes to every wanted channel again; the subscriber is :attr:`healthy` once
Redis has confirmed every one of them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeAlias, cast

from redis.exceptions import ResponseError

from ._connection import backoff, close_quietly, open_connection
from ._errors import describe, is_outage
from ._subscriptions import Confirmed, Desync, Lost, Pong, Refused, Subscriptions, Unexpected

if TYPE_CHECKING:
    import random
    from collections.abc import Iterable

    from ..protocols import Deliver
    from ._channels import ChannelNames
    from ._connection import Endpoint, RedisConnection, Settings
    from ._subscriptions import Reply

__all__ = ["Disconnected", "Event", "Subscriber", "SubscriberListener"]

logger = logging.getLogger("notifykit.redis")

_STABLE_SESSION = 1.0  # seconds: a session that lived this long resets the backoff


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The subscriber lost its connection (it reconnects by itself)."""


Event: TypeAlias = Confirmed | Refused | Lost | Disconnected
"""What a subscriber tells its owner."""

_DISCONNECTED = Disconnected()


class SubscriberListener(Protocol):
    """Who hears what happens to a subscriber's subscriptions (its owner)."""

    def on_event(self, subscriber: Subscriber, event: Event) -> None:
        """``event`` happened on ``subscriber``; called inline, so it must not block."""
        ...


class Subscriber:
    """Keeps one connection to ``endpoint`` subscribed to :attr:`wanted`.

    ``routes`` maps channel to routing key (the owner keeps it); ``names`` tells a late message
    on a channel just left from one that is not ours. With ``sharded``, it uses ``SSUBSCRIBE``
    (Redis Cluster sharded pub/sub).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        settings: Settings,
        listener: SubscriberListener,
        routes: dict[bytes, str],
        names: ChannelNames,
        *,
        sharded: bool,
        rng: random.Random,
    ) -> None:
        self.endpoint = endpoint
        self._settings = settings
        self._listener = listener
        self._routes = routes
        self._names = names
        self._rng = rng
        self._message = b"smessage" if sharded else b"message"
        self._state = Subscriptions(sharded=sharded)
        self._wake = asyncio.Event()
        self._pong = asyncio.Event()
        self._hurry = asyncio.Event()
        self._became_healthy = asyncio.Event()
        self._became_healthy.set()
        self._first_attempt = asyncio.Event()
        self._deliver: Deliver | None = None
        self._task: asyncio.Task[None] | None = None
        self._sessions = 0
        self._closing = False
        self.connected = False
        self.healthy = True
        """Connected with every channel wanted when the connection began confirmed, or not
        tried yet (a subscriber just created is not a failure)."""
        self.received = 0
        self.dropped = 0
        self.malformed = 0
        self.deliver_errors = 0
        self.reconnects = 0
        self.connect_failures = 0
        self.resubscribed_channels = 0
        self.watchdog_repairs = 0
        self.subscribe_batches = 0

    # --- what the owner calls -------------------------------------------------------------

    @property
    def wanted(self) -> set[bytes]:
        """The channels this connection should hold (do not mutate)."""
        return self._state.wanted

    def want(self, channel: bytes) -> bool:
        """Add ``channel`` to the wanted set; True if the server already confirmed it."""
        if self._state.want(channel):
            return True
        self._wake_writer()
        return False

    def unwant(self, channel: bytes) -> None:
        """Remove ``channel`` from the wanted set (the writer unsubscribes)."""
        self._state.unwant(channel)
        self._wake_writer()
        self._update_health()

    def resync(self, channels: Iterable[bytes]) -> None:
        """Subscribe again to those of ``channels`` still wanted (the server dropped them)."""
        self._state.resync(channels)
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._state.has_work:
            self._wake.set()

    async def wait_healthy(self) -> None:
        """Return once :attr:`healthy` (at once if it is)."""
        await self._became_healthy.wait()

    def hurry(self) -> None:
        """Bring the next reconnection attempt forward to ``backoff_initial`` after the last
        one, instead of the end of the backoff: someone has reason to think Redis is back."""
        self._hurry.set()

    def start(self, deliver: Deliver) -> None:
        """Start the supervisor task."""
        self._deliver = deliver
        self._task = asyncio.create_task(
            self._run(), name=f"notifykit-redis-subscriber-{self.endpoint.address}"
        )

    async def wait_first_attempt(self, seconds: float) -> None:
        """Return once the first connection attempt succeeded or failed (or after ``seconds``)."""
        try:
            async with asyncio.timeout(seconds):
                await self._first_attempt.wait()
        except TimeoutError:
            pass

    async def aclose(self) -> None:
        """Stop the supervisor and close the connection. Idempotent."""
        self._closing = True
        self._deliver = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                logger.error("subscriber task failed", exc_info=task.exception())
        self.connected = False
        self._update_health()

    COUNTERS = (
        "received",
        "dropped_unsubscribed",
        "malformed",
        "deliver_errors",
        "reconnects",
        "connect_failures",
        "resubscribed_channels",
        "lost_subscriptions",
        "watchdog_repairs",
        "subscribe_batches",
    )
    """The names :meth:`counters` returns."""

    def counters(self) -> dict[str, int]:
        """This subscriber's counters (see the propagators' ``statistics()``)."""
        return {
            "received": self.received,
            "dropped_unsubscribed": self.dropped,
            "malformed": self.malformed + self._state.unexpected_replies,
            "deliver_errors": self.deliver_errors,
            "reconnects": self.reconnects,
            "connect_failures": self.connect_failures,
            "resubscribed_channels": self.resubscribed_channels,
            "lost_subscriptions": self._state.lost_subscriptions,
            "watchdog_repairs": self.watchdog_repairs,
            "subscribe_batches": self.subscribe_batches,
        }

    def _update_health(self) -> None:
        if self.connected:
            healthy = self._state.restored
        else:
            healthy = self._sessions == 0 and not self._first_attempt.is_set()
        if healthy != self.healthy:
            self.healthy = healthy
            if healthy:
                self._became_healthy.set()
            else:
                self._became_healthy.clear()

    # --- sessions ---------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        address = self.endpoint.address
        attempt = 0
        while True:
            self._hurry.clear()
            try:
                connection = await open_connection(self.endpoint, self._settings, "sub")
            except Exception as exc:
                self.connect_failures += 1
                self._first_attempt.set()
                self._update_health()
                log = logger.warning if attempt == 0 else logger.debug
                log("cannot connect to Redis at %s: %s; retrying", address, describe(exc))
                await self._pause(backoff(attempt, self._settings, self._rng))
                attempt += 1
                continue
            started = loop.time()
            try:
                await self._session(connection)
            except Exception as exc:
                expected = is_outage(exc) or isinstance(exc, Desync)
                logger.log(
                    logging.WARNING if expected else logging.ERROR,
                    "lost the subscriber connection to Redis at %s: %s; reconnecting",
                    address,
                    describe(exc),
                    exc_info=None if expected else exc,
                )
            finally:
                self._end_session()
                await close_quietly(connection)
            if loop.time() - started >= _STABLE_SESSION:
                attempt = 0
            await self._pause(backoff(attempt, self._settings, self._rng))
            attempt += 1

    async def _pause(self, delay: float) -> None:
        """Wait ``delay`` seconds before the next attempt, or only ``backoff_initial`` once
        :meth:`hurry` is called."""
        shortest = min(delay, self._settings.backoff_initial)
        await asyncio.sleep(shortest)
        try:
            async with asyncio.timeout(delay - shortest):
                await self._hurry.wait()
        except TimeoutError:
            pass

    async def _session(self, connection: RedisConnection) -> None:
        self._sessions += 1
        self._first_attempt.set()
        self._state.begin()
        if self._sessions > 1:
            self.reconnects += 1
            self.resubscribed_channels += len(self.wanted)
            logger.info(
                "reconnected to Redis at %s; resubscribing %d channel(s)",
                self.endpoint.address,
                len(self.wanted),
            )
        self.connected = True
        self._update_health()
        self._wake.set()
        # Not an asyncio.TaskGroup: on Python 3.11 a TaskGroup whose child fails leaves the
        # parent task with a stale cancellation request, which later breaks timeouts and
        # aclose(). The three tasks run until one of them fails (they never return).
        tasks = [
            asyncio.create_task(self._read_loop(connection)),
            asyncio.create_task(self._write_loop(connection)),
            asyncio.create_task(self._watchdog()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
        failures = [task.exception() for task in tasks if not task.cancelled()]
        for failure in failures:
            if failure is not None:
                raise cast("Exception", failure)
        raise Desync("a session task ended")  # pragma: no cover - they loop forever

    def _end_session(self) -> None:
        self._state.end()
        self._pong.clear()
        self._wake.clear()
        was_connected, self.connected = self.connected, False
        self._update_health()
        if was_connected and not self._closing:
            self._listener.on_event(self, _DISCONNECTED)

    # --- the writer -----------------------------------------------------------------------

    async def _write_loop(self, connection: RedisConnection) -> None:
        state = self._state
        while True:
            await self._wake.wait()
            self._wake.clear()
            commands = state.next_commands()
            if commands:
                if not connection.is_connected:
                    raise Desync("the connection was closed")
                self.subscribe_batches += 1
                await connection.send_packed_command(commands, check_health=False)

    # --- the watchdog ---------------------------------------------------------------------

    async def _watchdog(self) -> None:
        interval = self._settings.health_check_interval
        timeout = self._settings.command_timeout
        while True:
            await asyncio.sleep(interval)
            self._pong.clear()
            self._state.request_ping()
            self._wake.set()
            try:
                async with asyncio.timeout(timeout):
                    await self._pong.wait()
            except TimeoutError:
                self.watchdog_repairs += 1
                raise Desync(f"no answer to PING within {timeout} s") from None

    # --- the reader -----------------------------------------------------------------------

    async def _read_loop(self, connection: RedisConnection) -> None:
        read = connection.read_response
        routes = self._routes
        message = self._message
        state = self._state
        deliver = self._deliver
        if deliver is None:
            raise RuntimeError("the subscriber is not started")
        while True:
            try:
                reply = await read(disconnect_on_error=False, push_request=True)
            except ResponseError as exc:
                self._report(state.on_error(exc))
            else:
                if type(reply) is list and len(reply) == 3 and reply[0] == message:
                    key = routes.get(reply[1])
                    if key is not None:
                        self.received += 1
                        try:
                            deliver(key, reply[2])
                        except Exception:
                            self.deliver_errors += 1
                            logger.exception("deliver raised for key %r; payload skipped", key)
                    else:
                        self._on_unrouted(reply[1])
                else:
                    self._report(state.on_reply(reply))

    def _report(self, reply: Reply | None) -> None:
        """Act on what a reply that is not a message meant."""
        if isinstance(reply, Pong):
            self._pong.set()
        elif isinstance(reply, Unexpected):
            logger.warning(
                "skipped an unexpected reply from Redis at %s: %.100r",
                self.endpoint.address,
                reply.reply,
            )
        elif reply is not None:
            self._listener.on_event(self, reply)
        self._update_health()

    def _on_unrouted(self, channel: object) -> None:
        if self._names.is_ours(channel):
            self.dropped += 1  # published before our UNSUBSCRIBE took effect
        else:
            self.malformed += 1
            logger.warning("skipped a message on an unexpected channel %.100r", channel)
