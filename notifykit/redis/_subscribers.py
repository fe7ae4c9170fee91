"""The subscriber connections of one propagator, and the channels they hold for it.

:class:`Subscribers` is the subscribe path of both Redis propagators, in one place:

* ``subscribe(keys)`` turns each key into its channel (:class:`~._channels.ChannelNames`),
  records it in the ``channel -> key`` table every reader routes messages with, hands it to the
  :class:`~._subscriber.Subscriber` of the server that serves it — one connection per server,
  made on first use — and waits until Redis has confirmed every channel;
* it is the one :class:`~._subscriber.SubscriberListener`: confirmations, refusals, dropped
  subscriptions and lost connections of every subscriber come here;
* it is the one place where waits merge: a channel wanted by many concurrent ``subscribe()``
  calls is one subscription, and its one confirmation releases them all. A caller that is
  cancelled (the hub's timeout) cancels only its own wait.

Where a channel lives is the propagator's business: ``locate(channel)`` gives the endpoint of
its server (always the same one for a single Redis; the master serving its slot on a cluster,
or None while the slot map is unknown). On a cluster, ``stale()`` is called when a
subscription was dropped or a connection lost, which may mean the slot map changed; the
propagator re-reads it and calls :meth:`Subscribers.rehome`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from ..errors import PropagationError
from ._errors import describe
from ._subscriber import Disconnected, Subscriber
from ._subscriptions import Confirmed, Lost, Refused

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from redis.exceptions import ResponseError

    from ..protocols import Deliver
    from ._channels import ChannelNames
    from ._connection import Endpoint, Settings
    from ._subscriber import Event

__all__ = ["Subscribers"]

logger = logging.getLogger("notifykit.redis")


class _Waiter:
    """One ``subscribe()`` call waiting for ``remaining`` channels."""

    __slots__ = ("future", "remaining")

    def __init__(self) -> None:
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.remaining = 0

    def channel_done(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0 and not self.future.done():
            self.future.set_result(None)

    def fail(self, error: PropagationError) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class Subscribers:
    """Keeps every channel this propagator wants subscribed on the connection of its server.

    ``sharded`` selects ``SSUBSCRIBE`` (Redis Cluster). ``stale`` is None for a single Redis: a
    subscription the server dropped is then asked for again on the same connection.
    """

    def __init__(
        self,
        settings: Settings,
        names: ChannelNames,
        *,
        locate: Callable[[bytes], Endpoint | None],
        sharded: bool,
        stale: Callable[[], None] | None = None,
    ) -> None:
        self.routes: dict[bytes, str] = {}
        """Channel → routing key of every wanted channel, read by every reader."""
        self.by_address: dict[str, Subscriber] = {}
        """The subscriber connection to each server (``host:port``)."""
        self._settings = settings
        self._names = names
        self._locate = locate
        self._sharded = sharded
        self._stale = stale
        self._waiting: dict[bytes, list[_Waiter]] = {}
        self._owner: dict[bytes, Subscriber] = {}
        self._homeless: set[bytes] = set()  # wanted, but no known server to hold them
        self._rng = random.Random()
        self._deliver: Deliver | None = None
        self._retired: dict[str, int] = {}
        self.rejected = 0
        self.moved = 0

    def start(self, deliver: Deliver) -> None:
        """Deliver what every subscriber, present and future, receives to ``deliver``."""
        self._deliver = deliver
        for subscriber in self.by_address.values():
            subscriber.start(deliver)

    def at(self, endpoint: Endpoint) -> Subscriber:
        """The subscriber connection to ``endpoint``, made (and started) if there is none."""
        subscriber = self.by_address.get(endpoint.address)
        if subscriber is None:
            subscriber = Subscriber(
                endpoint,
                self._settings,
                self,
                self.routes,
                self._names,
                sharded=self._sharded,
                rng=self._rng,
            )
            if self._deliver is not None:
                subscriber.start(self._deliver)
            self.by_address[endpoint.address] = subscriber
        return subscriber

    async def aclose(self) -> None:
        """Fail every waiting ``subscribe()``, close every connection. Idempotent."""
        waiting, self._waiting = self._waiting, {}
        for waiters in waiting.values():
            for waiter in waiters:
                waiter.fail(PropagationError("the propagator is closed"))
        for subscriber in self.by_address.values():
            await subscriber.aclose()
        self.routes.clear()
        self._owner.clear()
        self._homeless.clear()

    # --- what the propagator asks ---------------------------------------------------------

    async def subscribe(self, keys: Collection[str]) -> None:
        """Want the channels of ``keys``; return once Redis confirmed every one."""
        names, routes = self._names, self.routes
        waiter: _Waiter | None = None
        for key in keys:
            channel = names.channel(key)
            routes[channel] = key
            if not self._hold(channel):
                if waiter is None:
                    waiter = _Waiter()
                waiter.remaining += 1
                self._waiting.setdefault(channel, []).append(waiter)
        if waiter is not None:
            await waiter.future

    def unsubscribe(self, keys: Collection[str]) -> None:
        """Stop delivering ``keys`` at once; the unsubscribe commands follow in the background."""
        names, routes = self._names, self.routes
        for key in keys:
            channel = names.channel(key)
            routes.pop(channel, None)
            self._homeless.discard(channel)
            owner = self._owner.pop(channel, None)
            if owner is not None:
                owner.unwant(channel)
            self._release(channel)

    def rehome(self) -> None:
        """Hand every wanted channel whose server changed (or that had none) to the connection
        of the server ``locate`` now names."""
        self._homeless.clear()
        for channel in list(self.routes):
            owner = self._owner.get(channel)
            if owner is not None:
                endpoint = self._locate(channel)
                if endpoint is not None and owner.endpoint.address == endpoint.address:
                    continue
                owner.unwant(channel)
                del self._owner[channel]
            if self._hold(channel):
                self._release(channel)

    async def retire(self, keep: Collection[str]) -> None:
        """Close the connections to servers whose address is not in ``keep`` (no longer
        masters), keeping their counters."""
        for address in [a for a in self.by_address if a not in keep]:
            subscriber = self.by_address.pop(address)
            for name, value in subscriber.counters().items():
                self._retired[name] = self._retired.get(name, 0) + value
            await subscriber.aclose()

    @property
    def healthy(self) -> bool:
        """True while every connection is up with its subscriptions restored."""
        return all(subscriber.healthy for subscriber in self.by_address.values())

    def is_ready(self, address: str) -> bool:
        """False while the connection to ``address`` is down or still restoring its
        subscriptions (True if there is none: this instance holds nothing there)."""
        subscriber = self.by_address.get(address)
        return subscriber is None or subscriber.healthy

    async def ready(self, address: str) -> None:
        """Return once the connection to ``address`` (if there is one) holds everything it held
        before it was lost, so that a message published there now reaches this instance;
        after ``command_timeout`` raise :class:`~notifykit.errors.PropagationError`.

        Call it when the server answers again (the publisher could connect): the connection
        then makes its next attempt at once instead of at the end of its backoff.
        """
        subscriber = self.by_address.get(address)
        if subscriber is None or subscriber.healthy:
            return
        subscriber.hurry()
        timeout = self._settings.command_timeout
        try:
            async with asyncio.timeout(timeout):
                await subscriber.wait_healthy()
        except TimeoutError:
            raise PropagationError(
                f"Redis at {address} answers, but this instance is not subscribed there again "
                f"yet (waited {timeout:g} s): its own clients would miss the notification"
            ) from None

    def counters(self) -> dict[str, int]:
        """The counters of every subscriber, present and retired, summed, and
        ``subscriptions`` (channels wanted now) and ``rejected_subscriptions``."""
        stats = dict.fromkeys(Subscriber.COUNTERS, 0)
        stats.update(self._retired)
        for subscriber in self.by_address.values():
            for name, value in subscriber.counters().items():
                stats[name] += value
        stats["subscriptions"] = len(self.routes)
        stats["rejected_subscriptions"] = self.rejected
        return stats

    # --- what the subscribers report (SubscriberListener) ---------------------------------

    def on_event(self, subscriber: Subscriber, event: Event) -> None:
        """Act on what ``subscriber`` heard from Redis."""
        if isinstance(event, Confirmed):
            self._release(event.channel)
        elif isinstance(event, Refused):
            self._refused(subscriber, event.channels, event.error)
        elif isinstance(event, Lost):
            self._lost(subscriber, event.channels)
        elif isinstance(event, Disconnected) and self._stale is not None:
            self._stale()  # a lost node may have failed over

    def _refused(self, subscriber: Subscriber, channels: list[bytes], error: ResponseError) -> None:
        """Stop wanting ``channels`` and fail their waiters."""
        self.rejected += len(channels)
        address = subscriber.endpoint.address
        logger.error("Redis at %s refused %d subscription(s): %s", address, len(channels), error)
        error_message = f"Redis at {address} refused the subscription: {describe(error)}"
        for channel in channels:
            if self._owner.get(channel) is subscriber:
                del self._owner[channel]
            subscriber.unwant(channel)
            self.routes.pop(channel, None)
            for waiter in self._waiting.pop(channel, ()):
                waiter.fail(PropagationError(error_message))

    def _lost(self, subscriber: Subscriber, channels: list[bytes]) -> None:
        """Redis dropped ``channels``: ask again (one server has nowhere else to send us), or
        leave them homeless until the slot map is read again (a cluster's slot moved)."""
        address = subscriber.endpoint.address
        if self._stale is None:
            logger.warning(
                "Redis at %s dropped %d subscription(s); resubscribing", address, len(channels)
            )
            subscriber.resync(channels)
            return
        logger.warning(
            "Redis at %s no longer serves %d subscribed channel(s); refreshing the slot map",
            address,
            len(channels),
        )
        self.moved += len(channels)
        for channel in channels:
            if self._owner.get(channel) is subscriber:
                del self._owner[channel]
                subscriber.unwant(channel)
            if channel in self.routes:
                self._homeless.add(channel)
        self._stale()

    # --- bookkeeping ----------------------------------------------------------------------

    def _hold(self, channel: bytes) -> bool:
        """Make sure a connection holds ``channel``; True if Redis already confirmed it."""
        owner = self._owner.get(channel)
        if owner is None:
            endpoint = self._locate(channel)
            if endpoint is None:
                self._homeless.add(channel)
                if self._stale is not None:
                    self._stale()
                return False
            owner = self._owner[channel] = self.at(endpoint)
        return owner.want(channel)

    def _release(self, channel: bytes) -> None:
        """``channel`` is confirmed, or no longer wanted: its waiters stop waiting for it."""
        waiting = self._waiting.pop(channel, None)
        if waiting is not None:
            for waiter in waiting:
                waiter.channel_done()

    @property
    def homeless(self) -> bool:
        """True while some wanted channel has no server to hold it."""
        return bool(self._homeless)
