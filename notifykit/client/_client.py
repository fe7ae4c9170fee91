"""``NotifyClient``: receive notifications from a notifykit server, reconnecting by itself.

Built on the ``websockets`` library's asyncio implementation, so it runs on asyncio (not trio).
One background task owns the connection: it connects, reads every frame, answers requests by
their ``ref`` and reconnects with backoff; the public methods only send frames and wait for
their answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Origin, Subprotocol
from websockets.uri import parse_uri

from ..errors import ConfigurationError, ProtocolError
from ..wire import (
    SUBPROTOCOL,
    CloseCode,
    Error,
    ErrorCode,
    Notification,
    Ping,
    Refresh,
    Refreshed,
    ServerFrame,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Welcome,
    encode,
    parse_server,
)
from ._backoff import Backoff
from ._errors import ClientClosed, RequestRefused
from ._positions import Position, PositionBook
from ._state import ConnectionState, StateChange

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
    from types import TracebackType

    TokenFactory = Callable[[], Awaitable[str]]

__all__ = ["NotifyClient"]

logger = logging.getLogger("notifykit.client")

NO_CLOSE_FRAME = 1006
"""The close code reported when a connection ended without a close frame, or never opened."""
_RETRY_NEVER = frozenset({CloseCode.FORBIDDEN})
_REFRESH_MIN_DELAY = 1.0  # seconds between two failed refresh attempts, at least
_MAX_FRAME = 4 * 1024 * 1024  # a notification is at most the publish limit (1 MiB) plus a frame


class _ConnectionLost(Exception):
    """The connection a request was sent on ended before its answer came."""


@dataclass(eq=False)
class _Session:
    """One open, welcomed websocket and the requests waiting for answers on it."""

    ws: ClientConnection
    welcome: Welcome
    pending: dict[str, asyncio.Future[ServerFrame]] = field(default_factory=dict)
    subscriptions: dict[str, asyncio.Future[ServerFrame]] = field(default_factory=dict)
    expires_at: int | None = None
    retrying: bool = False  # a topic could not be subscribed again now: reconnect with backoff

    def fail_pending(self) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(_ConnectionLost())
                future.exception()  # retrieved: nobody may be waiting any more
        self.pending.clear()


@dataclass(frozen=True, slots=True)
class _Ended:
    """How a connection (or an attempt at one) ended."""

    code: int
    reason: str
    opened: bool = False
    error: BaseException | None = None

    def change(self) -> StateChange:
        return StateChange(
            ConnectionState.CLOSED, code=self.code, reason=self.reason, error=self.error
        )


class NotifyClient:
    """A notifykit client that stays connected: ``async with``, then iterate notifications.

    ::

        async with NotifyClient("wss://example.com/notify/ws", token_factory=get_token) as client:
            await client.subscribe("team:7")
            async for notification in client:
                print(notification.event, notification.data)

    ``token`` is a fixed JWT; ``token_factory`` an async callable returning a fresh one, called
    for every connection and to refresh the token before it expires (at ``refresh_at`` of its
    remaining lifetime). With neither, the client connects anonymously. The token is sent in
    the ``Authorization`` header.

    The client reconnects by itself after any close except ``4003`` (and ``4001`` when it has no
    ``token_factory``), waiting as ``backoff`` says; after ``4001`` it asks the factory for a
    new token. After every reconnect it subscribes again to its topics, and resumes from its
    stream positions when the server numbers its streams (``positions`` seeds them, e.g. from a
    previous run). ``on_state`` is called with every :class:`StateChange`;
    :meth:`state_changes` iterates them.

    Notifications wait in a buffer of ``max_buffer`` until you read them; while it is full the
    client stops reading from the server, which eventually closes a client that falls that far
    behind (``4008``) — it then reconnects and resumes. Runs on asyncio only.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        token_factory: TokenFactory | None = None,
        topics: Iterable[str] = (),
        backoff: Backoff | None = None,
        refresh_at: float = 0.8,
        resume: bool = True,
        positions: Mapping[str, Position] | None = None,
        on_state: Callable[[StateChange], None] | None = None,
        max_buffer: int = 1024,
        open_timeout: float = 15.0,
        origin: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        try:
            parse_uri(url)
        except InvalidURI as exc:
            raise ConfigurationError(f"not a websocket URL (ws:// or wss://): {url!r}") from exc
        if token is not None and token_factory is not None:
            raise ConfigurationError("give a token or a token_factory, not both")
        if not 0 < refresh_at < 1:
            raise ConfigurationError(f"refresh_at must be between 0 and 1, not {refresh_at!r}")
        if max_buffer < 1:
            raise ConfigurationError(f"max_buffer must be at least 1, not {max_buffer!r}")
        self.url = url
        self._token = token
        self._token_factory = token_factory
        self._topics: dict[str, None] = dict.fromkeys(topics)  # ordered set
        self._backoff = backoff if backoff is not None else Backoff()
        self._refresh_at = refresh_at
        self._resume = resume
        self._book = PositionBook(positions)
        self._on_state = on_state
        self._open_timeout = open_timeout
        self._origin = origin
        self._headers = dict(headers or {})
        self._inbox: _Inbox[Notification] = _Inbox(max_buffer)
        self._watchers: list[_Inbox[StateChange]] = []
        self._state = StateChange(ConnectionState.CONNECTING)
        self._session: _Session | None = None
        self._session_ready = asyncio.Event()
        self._open = asyncio.Event()
        self._closing = False
        self._stopped: ClientClosed | None = None
        self._stopped_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._refs = 0

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def start(self) -> None:
        """Start connecting in the background (``async with`` does this for you)."""
        if self._task is not None:
            raise RuntimeError("this NotifyClient was already started")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="notifykit-client")

    async def aclose(self) -> None:
        """Close the connection (code 1000) and stop; pending requests raise ClientClosed."""
        self._closing = True
        session, task = self._session, self._task
        if session is not None and task is not None:
            await session.ws.close(CloseCode.NORMAL)
            await asyncio.wait([task], timeout=1.0)  # it reports the close, then ends
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        self._stop(ClientClosed(CloseCode.NORMAL, "closed by the client"))

    # --- what the client knows ------------------------------------------------------------

    @property
    def state(self) -> StateChange:
        """The latest state change."""
        return self._state

    @property
    def user(self) -> str | None:
        """The user of the open connection (None while not open, or anonymous)."""
        return self._session.welcome.user if self._session else None

    @property
    def connection_id(self) -> str | None:
        """The id of the open connection, or None."""
        return self._session.welcome.connection_id if self._session else None

    @property
    def expires_at(self) -> int | None:
        """When the open connection's token expires (Unix seconds; refreshes move it)."""
        return self._session.expires_at if self._session else None

    @property
    def topics(self) -> frozenset[str]:
        """The topics the client keeps subscribed (again after each reconnect)."""
        return frozenset(self._topics)

    @property
    def positions(self) -> dict[str, Position]:
        """The last position per stream of the client's own (empty if the server does not
        number streams): save them to resume in a later run (``positions=``)."""
        return dict(self._book.streams)

    @property
    def topic_positions(self) -> dict[str, Position]:
        """The last position per subscribed topic."""
        return dict(self._book.topics)

    async def wait_open(self) -> None:
        """Wait until the client is ``open``; raise ClientClosed if it stops first."""
        await self._open_session()

    async def state_changes(self, buffer: int = 64) -> AsyncIterator[StateChange]:
        """Iterate state changes from now on, ending after ``stopped``.

        Up to ``buffer`` changes wait for you; beyond that the oldest are dropped.
        """
        watcher: _Inbox[StateChange] = _Inbox(buffer, drop_oldest=True)
        self._watchers.append(watcher)
        try:
            if self._stopped is not None:
                watcher.put_nowait(self._state)
                watcher.close()
            while True:
                try:
                    yield await watcher.get()
                except _InboxClosed:
                    return
        finally:
            self._watchers.remove(watcher)

    # --- notifications --------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Notification:
        """The next notification; the iteration ends when the client is closed, and raises
        :class:`ClientClosed` when the server stopped it for good."""
        self._require_started()
        try:
            return await self._inbox.get()
        except _InboxClosed:
            stopped = self._stopped
            if stopped is None or stopped.code == CloseCode.NORMAL:
                raise StopAsyncIteration from None
            raise stopped from stopped.__cause__

    # --- requests ---------------------------------------------------------------------------

    async def subscribe(self, topic: str) -> None:
        """Subscribe to ``topic`` and keep it across reconnects; return once the server agreed.

        While disconnected, waits for the next connection. Raises :class:`RequestRefused`
        (``forbidden``, ``invalid_topic``, ``unavailable``...) and then forgets the topic, or
        :class:`ClientClosed` if the client stops first.
        """
        self._require_started()
        self._topics[topic] = None
        while True:
            session = await self._welcomed_session()
            future = session.subscriptions.get(topic)
            if future is None:
                future = await self._send_subscribe(session, topic)
            try:
                reply = await asyncio.shield(future)
            except _ConnectionLost:
                continue  # the next connection subscribes again; wait for its answer
            if isinstance(reply, Error):
                self._forget(session, topic, future)
                raise RequestRefused(reply.code, reply.message)
            return

    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic`` (now, and after reconnects); returns once the server
        confirmed, or at once while disconnected."""
        self._topics.pop(topic, None)
        self._book.forget_topic(topic)
        session = self._session
        if session is None:
            return
        session.subscriptions.pop(topic, None)
        try:
            reply = await self._request(session, Unsubscribe(topic, self._ref("u")))
        except _ConnectionLost:
            return  # the next connection will not subscribe to it
        if isinstance(reply, Error):
            raise RequestRefused(reply.code, reply.message)
        self._book.forget_topic(topic)

    async def ping(self) -> None:
        """Send ``ping`` and wait for ``pong`` (waits for a connection while disconnected)."""
        while True:
            session = await self._open_session()
            try:
                await self._request(session, Ping(self._ref("p")))
            except _ConnectionLost:
                continue
            return

    # --- the connection loop ----------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        try:
            while True:
                self._emit(StateChange(ConnectionState.CONNECTING, attempt=attempt))
                ended = await self._connect_once()
                self._emit(ended.change())
                fatal = self._fatal(ended)
                if fatal is not None:
                    self._stop(fatal, ended.error)
                    return
                if ended.opened:
                    attempt = 0
                delay = self._backoff.delay(attempt)
                attempt += 1
                self._emit(StateChange(ConnectionState.RECONNECTING, attempt=attempt, delay=delay))
                await asyncio.sleep(delay)
        except Exception as exc:  # a bug: stop loudly rather than spin or hang
            logger.exception("notifykit client failed")
            self._stop(ClientClosed(NO_CLOSE_FRAME, f"client failed: {exc!r}"), exc)

    def _fatal(self, ended: _Ended) -> ClientClosed | None:
        if self._closing:
            return ClientClosed(CloseCode.NORMAL, "closed by the client")
        if ended.code in _RETRY_NEVER:
            return ClientClosed(ended.code, ended.reason)
        if ended.code == CloseCode.UNAUTHORIZED and self._token_factory is None:
            return ClientClosed(ended.code, ended.reason)  # the same token would fail again
        return None

    async def _connect_once(self) -> _Ended:
        """One connection: a token (a new one from the factory each time), the websocket."""
        try:
            token = await self._get_token()
        except Exception as exc:
            logger.warning("notifykit: the token factory failed: %r", exc)
            return _Ended(NO_CLOSE_FRAME, f"token factory failed: {exc!r}", error=exc)
        headers = dict(self._headers)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            async with connect(
                self._book.resume_url(self.url) if self._resume else self.url,
                additional_headers=headers,
                subprotocols=[Subprotocol(SUBPROTOCOL)],
                origin=Origin(self._origin) if self._origin is not None else None,
                open_timeout=self._open_timeout,
                close_timeout=2,
                max_size=_MAX_FRAME,
            ) as ws:
                return await self._serve(ws)
        except ConnectionClosed as exc:  # closed before the welcome (a refused token...)
            return _closed(exc)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            return _Ended(NO_CLOSE_FRAME, f"cannot connect: {exc}", error=exc)

    async def _get_token(self) -> str | None:
        if self._token_factory is not None:
            return await self._token_factory()
        return self._token

    async def _serve(self, ws: ClientConnection) -> _Ended:
        """Run one connection from its first frame to its close."""
        try:
            async with asyncio.timeout(self._open_timeout):
                text = await ws.recv()
        except TimeoutError as exc:
            return _Ended(NO_CLOSE_FRAME, "no welcome from the server", error=exc)
        try:
            frame: ServerFrame | None
            frame, raw = _decode(text)
        except ProtocolError:
            frame, raw = None, {}
        if not isinstance(frame, Welcome):
            await ws.close(CloseCode.NORMAL, "expected welcome")
            return _Ended(NO_CLOSE_FRAME, f"the first frame was not a welcome: {text[:80]!r}")
        session = _Session(ws, frame, expires_at=frame.expires_at)
        recovered = self._book.welcomed(raw)
        self._session = session
        self._session_ready.set()
        reader = asyncio.get_running_loop().create_task(self._read(session))
        refresher = asyncio.get_running_loop().create_task(self._refresh(session))
        try:
            if await self._resubscribe(session):
                self._emit(StateChange(ConnectionState.OPEN, recovered=recovered))
                self._open.set()
            return await reader
        finally:
            self._session = None
            self._session_ready.clear()
            self._open.clear()
            refresher.cancel()
            reader.cancel()
            await asyncio.wait([refresher, reader])
            session.fail_pending()

    async def _resubscribe(self, session: _Session) -> bool:
        """Subscribe again to every topic; False if the connection ended meanwhile, or if the
        server could not subscribe a topic now (``unavailable``: the topic is kept, and the
        connection closed to be made again, with backoff, rather than open without it)."""
        futures = {t: await self._send_subscribe(session, t) for t in list(self._topics)}
        for topic, future in futures.items():
            try:
                reply = await asyncio.shield(future)
            except _ConnectionLost:
                return False
            if isinstance(reply, Error) and reply.code == ErrorCode.UNAVAILABLE:
                logger.warning(
                    "notifykit: cannot subscribe to %r again now: %s; reconnecting",
                    topic,
                    reply.message,
                )
                session.retrying = True
                await session.ws.close(CloseCode.NORMAL, "subscribing again later")
                return False
            if isinstance(reply, Error):
                logger.warning("notifykit: cannot subscribe to %r again: %s", topic, reply.message)
                self._forget(session, topic, future)
        return True

    def _forget(self, session: _Session, topic: str, refused: asyncio.Future[ServerFrame]) -> None:
        """Drop a topic the server refused (a later ``subscribe`` asks again)."""
        self._topics.pop(topic, None)
        self._book.forget_topic(topic)
        if session.subscriptions.get(topic) is refused:
            del session.subscriptions[topic]

    async def _send_subscribe(self, session: _Session, topic: str) -> asyncio.Future[ServerFrame]:
        since = self._book.since(topic) if self._resume else None
        ref = self._ref("s")
        future = self._expect(session, ref)
        session.subscriptions[topic] = future
        if since is None:
            text = encode(Subscribe(topic, ref))
        else:  # wire.Subscribe has no "since" yet; servers without history ignore the field
            frame = {"type": "subscribe", "topic": topic, "ref": ref, "since": since.to_json()}
            text = json.dumps(frame)
        with contextlib.suppress(ConnectionClosed):  # the reader fails the future
            await session.ws.send(text)
        return future

    async def _read(self, session: _Session) -> _Ended:
        try:
            while True:
                text = await session.ws.recv()
                try:
                    frame, raw = _decode(text)
                except ProtocolError as exc:
                    if exc.code != ErrorCode.UNKNOWN_TYPE:  # new frame types are ignored
                        logger.warning("notifykit: ignored a bad server frame: %s", exc)
                    continue
                await self._dispatch(session, frame, raw)
        except ConnectionClosed as exc:
            ended = _closed(exc)
            # A connection closed to subscribe a topic again later does not count as one that
            # worked: the reconnect backs off.
            return _Ended(ended.code, ended.reason, opened=not session.retrying)

    async def _dispatch(self, session: _Session, frame: ServerFrame, raw: dict[str, Any]) -> None:
        if isinstance(frame, Notification):
            if self._book.accept(raw):
                await self._inbox.put(frame)
            return
        if isinstance(frame, Subscribed):
            self._book.subscribed(frame.topic, raw)
        elif isinstance(frame, Refreshed):
            session.expires_at = frame.expires_at
        elif isinstance(frame, Unsubscribed) and frame.ref is None:
            logger.info("notifykit: the server left topic %r (the token forbids it)", frame.topic)
            self._topics.pop(frame.topic, None)
            self._book.forget_topic(frame.topic)
        ref = getattr(frame, "ref", None)
        future = session.pending.pop(ref, None) if ref is not None else None
        if future is not None and not future.done():
            future.set_result(frame)
        elif isinstance(frame, Error):
            logger.warning("notifykit: server error %s: %s", frame.code, frame.message)

    async def _refresh(self, session: _Session) -> None:
        """Send a fresh token from the factory before the current one expires."""
        factory = self._token_factory
        if factory is None:
            return  # a fixed token cannot be refreshed: the server closes with 4001 at expiry
        while session.expires_at is not None:
            remaining = session.expires_at - time.time()
            if remaining <= _REFRESH_MIN_DELAY:
                return  # too late: the server closes with 4001 and the client reconnects
            await asyncio.sleep(max(remaining * self._refresh_at, _REFRESH_MIN_DELAY))
            try:
                reply = await self._request(session, Refresh(await factory(), self._ref("r")))
            except _ConnectionLost:
                return
            except Exception as exc:
                logger.warning("notifykit: the token factory failed; retrying: %r", exc)
                continue
            if isinstance(reply, Error):
                logger.warning("notifykit: token refresh refused: %s", reply.message)

    async def _request(self, session: _Session, frame: Ping | Refresh | Unsubscribe) -> ServerFrame:
        future = self._expect(session, frame.ref or "")
        try:
            await session.ws.send(encode(frame))
        except ConnectionClosed:
            raise _ConnectionLost() from None
        return await asyncio.shield(future)

    def _expect(self, session: _Session, ref: str) -> asyncio.Future[ServerFrame]:
        future: asyncio.Future[ServerFrame] = asyncio.get_running_loop().create_future()
        session.pending[ref] = future
        return future

    def _ref(self, kind: str) -> str:
        self._refs += 1
        return f"{kind}{self._refs}"

    def _require_started(self) -> None:
        if self._task is None:
            raise RuntimeError("start the client first: async with NotifyClient(...) as client")

    async def _welcomed_session(self) -> _Session:
        """The current session once it has its welcome (it may still be subscribing)."""
        while True:
            self._raise_if_stopped()
            if self._session is not None:
                return self._session
            await _first(self._session_ready.wait(), self._stopped_event.wait())

    async def _open_session(self) -> _Session:
        """The current session once it is ``open`` (welcomed, topics subscribed again)."""
        self._require_started()
        while True:
            self._raise_if_stopped()
            if self._open.is_set() and self._session is not None:
                return self._session
            await _first(self._open.wait(), self._stopped_event.wait())

    def _raise_if_stopped(self) -> None:
        if self._stopped is not None:
            raise self._stopped

    # --- state ------------------------------------------------------------------------------

    def _emit(self, change: StateChange) -> None:
        self._state = change
        for watcher in self._watchers:
            watcher.put_nowait(change)
        if self._on_state is not None:
            try:
                self._on_state(change)
            except Exception:
                logger.exception("notifykit: the on_state callback failed")

    def _stop(self, closed: ClientClosed, error: BaseException | None = None) -> None:
        if self._stopped is not None:
            return
        closed.__cause__ = error
        self._stopped = closed
        self._stopped_event.set()
        stopped = ConnectionState.STOPPED
        self._emit(StateChange(stopped, code=closed.code, reason=closed.reason, error=error))
        self._inbox.close()
        for watcher in self._watchers:
            watcher.close()


def _decode(text: str | bytes) -> tuple[ServerFrame, dict[str, Any]]:
    """A server frame, typed by :func:`notifykit.wire.parse_server`, and its raw JSON object
    (for the history fields — ``stream``/``offset``/``epoch``, ``positions``, ``position``,
    ``recovered`` — that the typed frames do not carry yet)."""
    frame = parse_server(text)
    raw: dict[str, Any] = json.loads(text)
    return frame, raw


def _closed(exc: ConnectionClosed) -> _Ended:
    if exc.rcvd is None:
        return _Ended(NO_CLOSE_FRAME, "connection lost without a close frame", error=exc)
    return _Ended(exc.rcvd.code, exc.rcvd.reason)


async def _first(*waits: Awaitable[object]) -> None:
    """Wait until the first of ``waits`` is done; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


class _InboxClosed(Exception):
    """The inbox is closed and empty."""


_T = TypeVar("_T")


class _Inbox(Generic[_T]):
    """A bounded FIFO for one consumer: ``put`` waits while full (or drops the oldest)."""

    def __init__(self, size: int, *, drop_oldest: bool = False) -> None:
        self._items: deque[_T] = deque()
        self._size = size
        self._drop_oldest = drop_oldest
        self._closed = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def put_nowait(self, item: _T) -> None:
        if self._closed:
            return
        if len(self._items) >= self._size:
            if not self._drop_oldest:
                raise RuntimeError("inbox full")
            self._items.popleft()
        self._items.append(item)
        self._readable.set()
        if len(self._items) >= self._size:
            self._writable.clear()

    async def put(self, item: _T) -> None:
        while len(self._items) >= self._size and not self._closed:
            await self._writable.wait()
        self.put_nowait(item)

    async def get(self) -> _T:
        while not self._items:
            if self._closed:
                raise _InboxClosed()
            await self._readable.wait()
        item = self._items.popleft()
        if not self._items:
            self._readable.clear()
        self._writable.set()
        return item

    def close(self) -> None:
        self._closed = True
        self._readable.set()
        self._writable.set()
