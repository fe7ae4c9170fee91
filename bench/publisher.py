"""A publisher process, one kind per variant, driven by the orchestrator (see :mod:`bench.rpc`).

Every notification carries ``{"s": <sequence>, "t": <time.time_ns() at the publish call>}``.

* ``notifykit`` — ``Hub(RedisPropagator(url))`` + ``notify_user``/``broadcast`` from many
  concurrent tasks (the propagator coalesces them into pipelines);
* ``single-channel`` — the same hub over the bench-only single-channel propagator;
* ``raw`` — ``PUBLISH`` of a notification-shaped frame, concurrent calls coalesced into
  pipelines by a 20-line coalescer;
* ``socketio`` — ``AsyncRedisManager(write_only=True).emit(..., room=user)``;
* ``broadcaster`` — ``Broadcast.publish(channel, frame)``.

Commands: ``targeted(users, n, concurrency)`` and ``broadcast(n, concurrency)`` publish as fast
as they can; ``paced(users, n, rate)`` publishes at a fixed rate.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import uvloop

from .common import EVENT, PREFIX, bench_frame


class Publisher:
    """What every kind of publisher does; subclasses send one notification."""

    async def start(self) -> None:
        """Connect."""

    async def aclose(self) -> None:
        """Disconnect."""

    async def to_user(self, user: str, seq: int) -> None:
        """Send notification ``seq`` to ``user``."""
        raise NotImplementedError

    async def to_everyone(self, seq: int) -> None:
        """Send notification ``seq`` to every connection."""
        raise NotImplementedError

    # --- commands -------------------------------------------------------------------------

    async def op_targeted(self, users: list[str], n: int, concurrency: int) -> dict[str, Any]:
        """Publish ``n`` notifications round-robin over ``users``, as fast as possible."""
        count = len(users)
        return await self._flood(n, concurrency, lambda i: self.to_user(users[i % count], i))

    async def op_broadcast(self, n: int, concurrency: int) -> dict[str, Any]:
        """Publish ``n`` broadcasts as fast as possible."""
        return await self._flood(n, concurrency, self.to_everyone)

    async def op_paced(self, users: list[str], n: int, rate: float) -> dict[str, Any]:
        """Publish ``n`` notifications round-robin over ``users`` at ``rate`` per second."""
        loop = asyncio.get_running_loop()
        count = len(users)
        tasks = []
        errors: list[str] = []
        start = loop.time()
        first_ns = time.time_ns()
        for i in range(n):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.to_user(users[i % count], i)))
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, BaseException):
                errors.append(repr(result))
        return {
            "first_ns": first_ns,
            "last_ns": time.time_ns(),
            "published": n - len(errors),
            "errors": len(errors),
            "first_errors": errors[:3],
            "late_s": max(0.0, loop.time() - start - n / rate),
        }

    async def _flood(self, n: int, concurrency: int, send: Any) -> dict[str, Any]:
        next_index = 0
        errors: list[str] = []

        async def worker() -> None:
            nonlocal next_index
            while next_index < n:
                i = next_index
                next_index += 1
                try:
                    await send(i)
                except Exception as exc:
                    errors.append(repr(exc))

        first_ns = time.time_ns()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return {
            "first_ns": first_ns,
            "last_ns": time.time_ns(),
            "published": n - len(errors),
            "errors": len(errors),
            "first_errors": errors[:3],
        }


class NotifyKitPublisher(Publisher):
    """``Hub(RedisPropagator(url))`` (or the single-channel propagator) + ``notify_user``."""

    def __init__(
        self, url: str, prefix: str, single_channel: bool, history_size: int = 100
    ) -> None:
        from notifykit import Hub
        from notifykit.redis import RedisPropagator

        propagator: Any = RedisPropagator(url, prefix=prefix, history_size=history_size)
        if single_channel:
            from .single_channel import SingleChannelPropagator

            propagator = SingleChannelPropagator(propagator)
        self.hub = Hub(propagator)

    async def start(self) -> None:
        await self.hub.__aenter__()

    async def aclose(self) -> None:
        await self.hub.aclose()

    async def to_user(self, user: str, seq: int) -> None:
        await self.hub.notify_user(user, EVENT, {"s": seq, "t": time.time_ns()})

    async def to_everyone(self, seq: int) -> None:
        await self.hub.broadcast(EVENT, {"s": seq, "t": time.time_ns()})


class RawPublisher(Publisher):
    """``PUBLISH <prefix>:u:<user> <frame>``, concurrent calls coalesced into pipelines."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis.asyncio as redis

        self.client = redis.Redis.from_url(url)
        self.prefix = prefix
        self.queue: list[tuple[str, str, asyncio.Future[None]]] = []
        self.flusher: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _publish(self, channel: str, frame: str) -> None:
        future = asyncio.get_running_loop().create_future()
        self.queue.append((channel, frame, future))
        if self.flusher is None:
            self.flusher = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        try:
            while self.queue:
                batch, self.queue = self.queue, []
                pipe = self.client.pipeline(transaction=False)
                for channel, frame, _ in batch:
                    pipe.publish(channel, frame)
                try:
                    await pipe.execute()
                except Exception as exc:
                    for *_, future in batch:
                        future.set_exception(exc)
                else:
                    for *_, future in batch:
                        future.set_result(None)
        finally:
            self.flusher = None

    async def to_user(self, user: str, seq: int) -> None:
        await self._publish(f"{self.prefix}:u:{user}", bench_frame(seq, time.time_ns()))

    async def to_everyone(self, seq: int) -> None:
        await self._publish(f"{self.prefix}:all", bench_frame(seq, time.time_ns()))


class SocketIOPublisher(Publisher):
    """``AsyncRedisManager(write_only=True).emit(event, data, room=user)``."""

    def __init__(self, url: str, prefix: str) -> None:
        import socketio

        self.manager = socketio.AsyncRedisManager(
            url, channel=f"{prefix}:socketio", write_only=True
        )

    async def to_user(self, user: str, seq: int) -> None:
        await self.manager.emit(EVENT, {"s": seq, "t": time.time_ns()}, room=user, namespace="/")

    async def to_everyone(self, seq: int) -> None:
        await self.manager.emit(EVENT, {"s": seq, "t": time.time_ns()}, namespace="/")


class BroadcasterPublisher(Publisher):
    """``Broadcast(url).publish(channel, frame)``."""

    def __init__(self, url: str, prefix: str) -> None:
        from broadcaster import Broadcast

        self.broadcast = Broadcast(url)
        self.prefix = prefix

    async def start(self) -> None:
        await self.broadcast.connect()

    async def aclose(self) -> None:
        await self.broadcast.disconnect()

    async def to_user(self, user: str, seq: int) -> None:
        await self.broadcast.publish(f"{self.prefix}:u:{user}", bench_frame(seq, time.time_ns()))

    async def to_everyone(self, seq: int) -> None:
        await self.broadcast.publish(f"{self.prefix}:all", bench_frame(seq, time.time_ns()))


def make_publisher(kind: str, url: str, prefix: str) -> Publisher:
    """The publisher for one variant."""
    if kind == "notifykit":
        return NotifyKitPublisher(url, prefix, single_channel=False)
    if kind == "notifykit-nohistory":
        return NotifyKitPublisher(url, prefix, single_channel=False, history_size=0)
    if kind == "single-channel":
        return NotifyKitPublisher(url, prefix, single_channel=True)
    if kind == "raw":
        return RawPublisher(url, prefix)
    if kind == "socketio":
        return SocketIOPublisher(url, prefix)
    if kind == "broadcaster":
        return BroadcasterPublisher(url, prefix)
    raise ValueError(f"unknown publisher kind {kind!r}")


async def _main(kind: str, url: str, prefix: str) -> None:
    from .rpc import serve_commands

    publisher = make_publisher(kind, url, prefix)
    await publisher.start()
    try:
        await serve_commands(publisher)
    finally:
        await publisher.aclose()


def main() -> None:
    """Entry point: ``python -m bench.publisher --kind raw --redis-url ...``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", default=PREFIX)
    args = parser.parse_args()
    uvloop.run(_main(args.kind, args.redis_url, args.prefix))


if __name__ == "__main__":
    main()
