"""The contract of :class:`~notifykit.protocols.Presence` as checks any implementation can run.

Like :mod:`notifykit.testing.conformance`, each check states one rule in its docstring and
raises :class:`AssertionError` naming the rule when an implementation breaks it::

    @pytest.mark.anyio
    @pytest.mark.parametrize("check", PRESENCE_CHECKS, ids=lambda c: c.__name__)
    async def test_my_presence(check, my_factory):
        await check(my_factory)

A :data:`PresenceFactory` takes a namespace and returns an async context manager yielding a new,
*unstarted* presence. Presences made with the same namespace share what they record, as the
instances of one deployment do (for Redis: the same server and prefix); different namespaces
see nothing of each other. Every check uses a namespace of its own, so one backend can serve
every check. The checks call ``start`` and ``aclose`` themselves.

Nothing here needs pytest. Every call is bounded: each check takes ``timeout=`` (seconds any one
call may take, default 5), and the checks work under ``python -O``.
The checks need no ttl to pass: what happens to a crashed instance is implementation-specific
and tested by each implementation's own tests.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import TYPE_CHECKING, Protocol, TypeAlias, TypeVar

import anyio

from ..protocols import Presence
from ._checking import STAT_NAME, TIMEOUT, bounded, expect

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "PRESENCE_CHECKS",
    "PresenceCheck",
    "PresenceFactory",
    "check_presence",
    "check_presence_aclose_removes_own_entries_at_once",
    "check_presence_calls_are_idempotent",
    "check_presence_counts_each_user_once",
    "check_presence_enforces_its_lifecycle",
    "check_presence_keeps_user_online_until_last_connection_leaves",
    "check_presence_online_users_respects_limit",
    "check_presence_reports_healthy_once_started",
    "check_presence_sees_users_of_every_instance",
    "check_presence_statistics_map_names_to_counts",
    "check_presence_survives_a_connection_storm",
]

PresenceFactory: TypeAlias = Callable[[str], AbstractAsyncContextManager[Presence]]
"""Returns a context manager yielding a new unstarted presence sharing ``namespace``."""

_T = TypeVar("_T")


class _Instance:
    """One started presence, with every call bounded by ``timeout`` s and named in failures."""

    def __init__(self, name: str, presence: Presence, timeout: float) -> None:
        self.name = name
        self.presence = presence
        self.timeout = timeout

    async def _call(self, what: str, call: Awaitable[_T]) -> _T:
        with bounded(f"{self.name}.{what}", self.timeout):
            return await call

    async def connected(self, user_id: str, connection_id: str) -> None:
        what = f"connected({user_id!r}, {connection_id!r})"
        await self._call(what, self.presence.connected(user_id, connection_id))

    async def disconnected(self, user_id: str, connection_id: str) -> None:
        what = f"disconnected({user_id!r}, {connection_id!r})"
        await self._call(what, self.presence.disconnected(user_id, connection_id))

    async def is_online(self, user_id: str) -> bool:
        return await self._call(f"is_online({user_id!r})", self.presence.is_online(user_id))

    async def connections_of(self, user_id: str) -> list[str]:
        what = f"connections_of({user_id!r})"
        return await self._call(what, self.presence.connections_of(user_id))

    async def online_users(self, limit: int = 10_000) -> list[str]:
        return await self._call(f"online_users({limit})", self.presence.online_users(limit))

    async def online_count(self) -> int:
        return await self._call("online_count()", self.presence.online_count())

    async def aclose(self) -> None:
        await self._call("aclose()", self.presence.aclose())

    async def expect_online(self, user_id: str, connections: Iterable[str], rule: str) -> None:
        """``user_id`` is online here with exactly ``connections`` (offline if none)."""
        expected = sorted(connections)
        online = await self.is_online(user_id)
        expect(
            online == bool(expected),
            f"{rule}: {self.name}.is_online({user_id!r}) is {online}, expected {bool(expected)}",
        )
        actual = await self.connections_of(user_id)
        expect(
            isinstance(actual, list) and sorted(actual) == expected,
            f"{rule}: {self.name}.connections_of({user_id!r}) is {actual!r}, "
            f"expected {expected!r} (in any order)",
        )

    async def expect_users(self, users: Iterable[str], rule: str) -> None:
        """``online_users()`` lists exactly ``users``, once each, and ``online_count()`` agrees."""
        expected = sorted(users)
        actual = await self.online_users()
        expect(
            isinstance(actual, list) and sorted(actual) == expected,
            f"{rule}: {self.name}.online_users() is {sorted(actual)!r}, expected {expected!r}",
        )
        count = await self.online_count()
        expect(
            count == len(expected),
            f"{rule}: {self.name}.online_count() is {count!r}, expected {len(expected)}",
        )


class _Deployment(AsyncExitStack):
    """``size`` started instances sharing a fresh namespace; every call is bounded by
    ``timeout`` seconds."""

    def __init__(self, factory: PresenceFactory, size: int, timeout: float) -> None:
        super().__init__()
        self._factory = factory
        self._size = size
        self.timeout = timeout
        self.namespace = f"nk-presence-check-{secrets.token_hex(4)}"
        self.instances: list[_Instance] = []

    async def __aenter__(self) -> _Deployment:
        await super().__aenter__()
        try:
            for _ in range(self._size):
                await self.add()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def add(self) -> _Instance:
        """Start one more instance on the namespace."""
        name = f"instance {'ABCDEFGH'[len(self.instances)]}"
        presence = await self.enter_async_context(self._factory(self.namespace))
        expect(
            isinstance(presence, Presence),
            f"the factory yielded {presence!r}, which is not a Presence",
        )
        instance = _Instance(name, presence, self.timeout)
        with bounded(f"{name}.start()", self.timeout):
            await presence.start()
        self.push_async_callback(instance.aclose)
        self.instances.append(instance)
        return instance


def _user(label: str) -> str:
    """A user id unique to this run, with characters that trip naive key schemes."""
    return f"{label}/{{tag}}:ü {secrets.token_hex(3)}"


async def check_presence_sees_users_of_every_instance(
    factory: PresenceFactory, *, timeout: float = TIMEOUT
) -> None:
    """A connection recorded on one instance is seen, with its id, by every instance as soon
    as ``connected`` returns; users nobody recorded are offline everywhere."""
    async with _Deployment(factory, 2, timeout) as deployment:
        a, b = deployment.instances
        alice, bob, nobody = _user("alice"), _user("bob"), _user("nobody")
        await a.connected(alice, "conn/a:1")
        await b.connected(bob, "conn-b-1")
        rule = "every instance sees every instance's connections"
        for instance in (a, b):
            await instance.expect_online(alice, ["conn/a:1"], rule)
            await instance.expect_online(bob, ["conn-b-1"], rule)
            await instance.expect_online(nobody, [], "unknown users are offline")
            await instance.expect_users([alice, bob], rule)


async def check_presence_keeps_user_online_until_last_connection_leaves(
    factory: PresenceFactory, *, timeout: float = TIMEOUT
) -> None:
    """A user with connections on two instances stays online, with the remaining ones, until
    both are gone; then every instance sees them offline and uncounted."""
    async with _Deployment(factory, 2, timeout) as deployment:
        a, b = deployment.instances
        carol = _user("carol")
        await a.connected(carol, "on-a-1")
        await a.connected(carol, "on-a-2")
        await b.connected(carol, "on-b")
        for instance in (a, b):
            await instance.expect_online(carol, ["on-a-1", "on-a-2", "on-b"], "all connections")
            await instance.expect_users([carol], "one user, however many connections")
        await a.disconnected(carol, "on-a-1")
        rule = "a disconnection removes that connection only"
        for instance in (a, b):
            await instance.expect_online(carol, ["on-a-2", "on-b"], rule)
        await a.disconnected(carol, "on-a-2")
        rule = "a user stays online while any instance holds a connection"
        for instance in (a, b):
            await instance.expect_online(carol, ["on-b"], rule)
            await instance.expect_users([carol], rule)
        await b.disconnected(carol, "on-b")
        rule = "a user is offline once their last connection is gone"
        for instance in (a, b):
            await instance.expect_online(carol, [], rule)
            await instance.expect_users([], rule)


async def check_presence_calls_are_idempotent(
    factory: PresenceFactory, *, timeout: float = TIMEOUT
) -> None:
    """Recording a connection twice records it once; forgetting an unknown connection, or one
    twice, or one held by another instance, is a no-op."""
    async with _Deployment(factory, 2, timeout) as deployment:
        a, b = deployment.instances
        dave, erin = _user("dave"), _user("erin")
        await a.connected(dave, "c1")
        await a.connected(dave, "c1")
        await a.expect_online(dave, ["c1"], "a connection recorded twice is listed once")
        await a.disconnected(dave, "never-connected")
        await a.disconnected(erin, "c1")
        await b.disconnected(dave, "c1")
        rule = "forgetting what this instance does not hold changes nothing"
        await b.expect_online(dave, ["c1"], rule)
        await b.expect_users([dave], rule)
        await a.disconnected(dave, "c1")
        await a.disconnected(dave, "c1")
        await b.expect_online(dave, [], "a connection recorded twice is gone after one removal")
        await b.expect_users([], "a connection recorded twice is gone after one removal")


async def check_presence_counts_each_user_once(
    factory: PresenceFactory, *, timeout: float = TIMEOUT
) -> None:
    """``online_users`` lists each online user once and ``online_count`` counts them once, however
    many connections and instances they have."""
    async with _Deployment(factory, 3, timeout) as deployment:
        a, b, c = deployment.instances
        users = [_user(f"user{index}") for index in range(5)]
        for index, user in enumerate(users):
            await a.connected(user, f"{index}-a")
            if index % 2 == 0:
                await b.connected(user, f"{index}-b")
                await b.connected(user, f"{index}-b2")
        await c.connected(users[0], "0-c")
        for instance in deployment.instances:
            await instance.expect_users(users, "each online user is listed and counted once")


async def check_presence_online_users_respects_limit(
    factory: PresenceFactory, *, timeout: float = TIMEOUT
) -> None:
    """``online_users(limit)`` returns ``limit`` distinct online users when more are online,
    all of them when fewer are, and none for a limit of 0 or less."""
    async with _Deployment(factory, 2, timeout) as deployment:
        a, b = deployment.instances
        users = [_user(f"many{index}") for index in range(12)]
        for index, user in enumerate(users):
            await (a if index % 2 else b).connected(user, f"c{index}")
        for limit in (1, 5, 11):
            some = await a.online_users(limit)
            expect(
                len(some) == limit and len(set(some)) == limit and set(some) <= set(users),
                f"online_users({limit}) must return {limit} distinct online users "
                f"of 12, got {some!r}",
            )
        for limit in (12, 100):
            every = await b.online_users(limit)
            expect(
                sorted(every) == sorted(users),
                f"online_users({limit}) must return all 12 online users, got {every!r}",
            )
        for limit in (0, -1):
            none = await a.online_users(limit)
            expect(none == [], f"online_users({limit}) must be [], got {none!r}")


async def check_presence_aclose_removes_own_entries_at_once(
    factory: PresenceFactory, *, timeout: float = TIMEOUT
) -> None:
    """When ``aclose()`` returns, the connections of that instance are gone for every other
    instance (no waiting for a ttl), and the others' are untouched. ``aclose`` is idempotent."""
    async with _Deployment(factory, 2, timeout) as deployment:
        a, b = deployment.instances
        only_a, both, only_b = _user("only-a"), _user("both"), _user("only-b")
        await a.connected(only_a, "a1")
        await a.connected(both, "a2")
        await b.connected(both, "b2")
        await b.connected(only_b, "b3")
        await b.expect_users([only_a, both, only_b], "before aclose")
        await a.aclose()
        await a.aclose()
        rule = "aclose() removes the instance's own connections at once, and only those"
        await b.expect_online(only_a, [], rule)
        await b.expect_online(both, ["b2"], rule)
        await b.expect_online(only_b, ["b3"], rule)
        await b.expect_users([both, only_b], rule)


async def check_presence_survives_a_connection_storm(
    factory: PresenceFactory, *, timeout: float = TIMEOUT
) -> None:
    """Hundreds of concurrent ``connected`` calls (a reconnect storm) all take effect, and so do
    hundreds of concurrent ``disconnected`` calls."""
    async with _Deployment(factory, 2, timeout) as deployment:
        a, b = deployment.instances
        users = [_user(f"storm{index}") for index in range(100)]
        pairs = [(user, f"{user}#{n}") for user in users for n in range(4)]
        with bounded(f"{len(pairs)} concurrent connected() calls", timeout):
            async with anyio.create_task_group() as group:
                for user, connection in pairs:
                    group.start_soon(a.presence.connected, user, connection)
        rule = "every connection of a storm is recorded"
        await b.expect_users(users, rule)
        for user in users[:10]:
            await b.expect_online(user, [f"{user}#{n}" for n in range(4)], rule)
        with bounded(f"{len(pairs)} concurrent disconnected() calls", timeout):
            async with anyio.create_task_group() as group:
                for user, connection in pairs:
                    group.start_soon(a.presence.disconnected, user, connection)
        rule = "every disconnection of a storm is recorded"
        await b.expect_users([], rule)
        for user in users[:10]:
            await b.expect_online(user, [], rule)


async def check_presence_enforces_its_lifecycle(
    factory: PresenceFactory, *, timeout: float = TIMEOUT
) -> None:
    """Before ``start()`` calls raise RuntimeError; ``start()`` twice is fine; after ``aclose()``
    ``connected`` raises RuntimeError and ``disconnected`` is a no-op."""
    namespace = f"nk-presence-check-{secrets.token_hex(4)}"
    async with factory(namespace) as presence:
        user = _user("lifecycle")
        for what, call in (
            ("connected", lambda: presence.connected(user, "c1")),
            ("is_online", lambda: presence.is_online(user)),
            ("online_count", lambda: presence.online_count()),
        ):
            try:
                with bounded(f"{what}() before start()", timeout):
                    await call()
            except RuntimeError:
                pass
            else:
                raise AssertionError(f"{what}() before start() must raise RuntimeError")
        with bounded("start()", timeout):
            await presence.start()
        with bounded("a second start()", timeout):
            await presence.start()
        instance = _Instance("the instance", presence, timeout)
        await instance.connected(user, "c1")
        await instance.expect_online(user, ["c1"], "start() twice is one start")
        await instance.aclose()
        try:
            with bounded("connected() after aclose()", timeout):
                await presence.connected(user, "c2")
        except RuntimeError:
            pass
        else:
            raise AssertionError("connected() after aclose() must raise RuntimeError")
        await instance.disconnected(user, "c1")


async def check_presence_reports_healthy_once_started(
    factory: PresenceFactory, *, timeout: float = TIMEOUT
) -> None:
    """``healthy`` is True once ``start()`` has returned on a reachable backend."""
    async with _Deployment(factory, 1, timeout) as deployment:
        (a,) = deployment.instances
        expect(a.presence.healthy is True, "healthy must be True on a reachable backend")


async def check_presence_statistics_map_names_to_counts(
    factory: PresenceFactory, *, timeout: float = TIMEOUT
) -> None:
    """``statistics()`` maps snake_case names to integer counts, and includes
    ``local_connections`` counting this instance's connections."""
    async with _Deployment(factory, 1, timeout) as deployment:
        (a,) = deployment.instances
        user = _user("stats")
        await a.connected(user, "s1")
        await a.connected(user, "s2")
        stats = a.presence.statistics()
        for name, value in stats.items():
            expect(
                isinstance(name, str) and STAT_NAME.fullmatch(name) is not None,
                f"statistics names must be snake_case, got {name!r}",
            )
            expect(
                type(value) is int,
                f"statistics values must be ints, got {name}={value!r}",
            )
        expect(
            stats.get("local_connections") == 2,
            f"statistics()['local_connections'] must be 2, got {stats.get('local_connections')}",
        )


class PresenceCheck(Protocol):
    """The signature of every presence check."""

    def __call__(self, factory: PresenceFactory, *, timeout: float = ...) -> Awaitable[None]:
        """Check one rule against presences from ``factory``; raise ``AssertionError`` naming
        it when broken, or when any one call takes longer than ``timeout`` seconds."""
        ...


PRESENCE_CHECKS: tuple[PresenceCheck, ...] = (
    check_presence_sees_users_of_every_instance,
    check_presence_keeps_user_online_until_last_connection_leaves,
    check_presence_calls_are_idempotent,
    check_presence_counts_each_user_once,
    check_presence_online_users_respects_limit,
    check_presence_aclose_removes_own_entries_at_once,
    check_presence_survives_a_connection_storm,
    check_presence_enforces_its_lifecycle,
    check_presence_reports_healthy_once_started,
    check_presence_statistics_map_names_to_counts,
)
"""Every presence check, for a test suite to parametrize over."""


async def check_presence(factory: PresenceFactory, *, timeout: float = TIMEOUT) -> None:
    """Run every check in :data:`PRESENCE_CHECKS` against presences from ``factory``."""
    for check in PRESENCE_CHECKS:
        await check(factory, timeout=timeout)
