"""The socket-state checks: the :class:`~notifykit.protocols.SocketState` contract, one rule
each.

Public through :mod:`notifykit.testing.conformance`, which says how to run them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeAlias

from ..connection import Connection
from ..model import Principal, topic_key
from ..protocols import SocketState
from ._checking import expect, short

__all__ = [
    "SOCKET_STATE_CHECKS",
    "SocketStateFactory",
    "check_socket_state",
    "check_socket_state_add_reports_first_connection",
    "check_socket_state_counts_distinct_connections_and_users",
    "check_socket_state_forgets_empty_keys",
    "check_socket_state_members_reflect_adds_and_removes",
    "check_socket_state_remove_of_absent_connection_is_a_no_op",
    "check_socket_state_remove_reports_last_connection",
    "check_socket_state_survives_churn_without_leaking",
]

SocketStateFactory: TypeAlias = Callable[[], SocketState]
"""Returns a new, empty socket state."""


@contextmanager
def _connections() -> Iterator[Callable[[str | None], Connection]]:
    """Make connections for a check, and release their queues when it ends."""
    made: list[Connection] = []

    def make(user_id: str | None) -> Connection:
        connection = Connection(Principal(user_id), queue_size=1)
        made.append(connection)
        return connection

    try:
        yield make
    finally:
        for connection in made:
            # Connection has no public way to close its queue yet; an unclosed anyio stream
            # warns (ResourceWarning) when garbage-collected.
            connection.release()


def _new_state(factory: SocketStateFactory) -> SocketState:
    state = factory()
    expect(isinstance(state, SocketState), f"the factory returned {state!r}, not a SocketState")
    _expect_empty(state, "a new socket state is empty")
    return state


def _expect_empty(state: SocketState, rule: str) -> None:
    keys = list(state.keys())
    expect(not keys, f"{rule}: keys() still holds {short(keys)}")
    expect(state.connection_count == 0, f"{rule}: connection_count is {state.connection_count}")
    expect(state.user_count == 0, f"{rule}: user_count is {state.user_count}")


def _expect_keys(state: SocketState, expected: set[str]) -> None:
    keys = list(state.keys())
    expect(
        len(keys) == len(expected) and set(keys) == expected,
        f"keys() must list exactly the keys with a connection: it is {sorted(keys)}, "
        f"expected {sorted(expected)}",
    )


def _register(state: SocketState, connection: Connection, *topics: str) -> None:
    for key in (*connection.principal.routing_keys(), *map(topic_key, topics)):
        state.add(key, connection)


def _unregister(state: SocketState, connection: Connection, *topics: str) -> None:
    for key in (*connection.principal.routing_keys(), *map(topic_key, topics)):
        state.remove(key, connection)


def _expect_members(state: SocketState, key: str, expected: set[Connection], rule: str) -> None:
    members = state.members(key)
    expect(
        len(members) == len(expected) and set(members) == expected,
        f"{rule}: members({key!r}) is {short(list(members))}, expected {short(expected)}",
    )


def check_socket_state_add_reports_first_connection(factory: SocketStateFactory) -> None:
    """``add`` returns True only for the first connection under a key."""
    with _connections() as make:
        state = _new_state(factory)
        one, two = make("u1"), make("u1")
        expect(state.add("u:u1", one) is True, "add returns True for a key's first connection")
        expect(state.add("u:u1", two) is False, "add returns False for a later connection")
        expect(state.add("u:u1", one) is False, "add returns False for a connection already in")
        expect(state.add("t:news", two) is True, "add returns True for another key's first")


def check_socket_state_remove_reports_last_connection(factory: SocketStateFactory) -> None:
    """``remove`` returns True only when the last connection leaves a key."""
    with _connections() as make:
        state = _new_state(factory)
        one, two = make("u1"), make("u1")
        state.add("u:u1", one)
        state.add("u:u1", two)
        expect(state.remove("u:u1", one) is False, "remove returns False while others remain")
        expect(state.remove("u:u1", two) is True, "remove returns True when the last leaves")


def check_socket_state_remove_of_absent_connection_is_a_no_op(
    factory: SocketStateFactory,
) -> None:
    """Removing a connection that is not under a key changes nothing and returns False."""
    with _connections() as make:
        state = _new_state(factory)
        one, two = make("u1"), make("u2")
        rule = "removing an absent connection returns False"
        expect(state.remove("u:u1", one) is False, f"{rule} (unknown key)")
        state.add("u:u1", one)
        expect(state.remove("u:u1", two) is False, f"{rule} (known key, other connection)")
        expect(state.remove("t:news", one) is False, f"{rule} (connection under other keys)")
        _expect_members(state, "u:u1", {one}, "removing an absent connection changes nothing")
        expect(state.remove("u:u1", one) is True, "removing the last connection returns True")
        expect(state.remove("u:u1", one) is False, f"{rule} (removed twice)")


def check_socket_state_members_reflect_adds_and_removes(factory: SocketStateFactory) -> None:
    """``members(key)`` holds exactly the connections added under it and not yet removed."""
    with _connections() as make:
        state = _new_state(factory)
        one, two, three = make("u1"), make("u2"), make(None)
        rule = "members reflects adds and removes"
        _expect_members(state, "t:news", set(), f"{rule} (unknown key)")
        for connection in (one, two, three):
            state.add("t:news", connection)
        state.add("t:sport", two)
        _expect_members(state, "t:news", {one, two, three}, rule)
        _expect_members(state, "t:sport", {two}, rule)
        state.remove("t:news", two)
        _expect_members(state, "t:news", {one, three}, rule)
        _expect_members(state, "t:sport", {two}, rule)
        state.remove("t:news", one)
        state.remove("t:news", three)
        _expect_members(state, "t:news", set(), rule)
        state.add("t:news", two)
        _expect_members(state, "t:news", {two}, f"{rule} (a key used again)")


def check_socket_state_forgets_empty_keys(factory: SocketStateFactory) -> None:
    """``keys()`` lists exactly the keys with a connection; a key leaves with its last one."""
    with _connections() as make:
        state = _new_state(factory)
        one, two, anonymous = make("u1"), make("u2"), make(None)
        _register(state, one, "news")
        _register(state, two, "news", "sport")
        _register(state, anonymous)
        expected = {"u:u1", "u:u2", "auth", "all", "t:news", "t:sport"}
        _expect_keys(state, expected)
        _unregister(state, two, "news", "sport")
        expected -= {"u:u2", "t:sport"}
        _expect_keys(state, expected)
        _unregister(state, one, "news")
        _unregister(state, anonymous)
        _expect_empty(state, "no key is left once every connection is removed")


def check_socket_state_counts_distinct_connections_and_users(factory: SocketStateFactory) -> None:
    """``connection_count`` counts distinct connections; ``user_count`` distinct users with at
    least one (anonymous connections count as connections, not users)."""
    with _connections() as make:
        state = _new_state(factory)
        first, second, other, anonymous = make("u1"), make("u1"), make("u2"), make(None)
        steps = (
            (_register, first, 1, 1),
            (_register, second, 2, 1),
            (_register, other, 3, 2),
            (_register, anonymous, 4, 2),
            (_unregister, first, 3, 2),
            (_unregister, anonymous, 2, 2),
            (_unregister, second, 1, 1),
            (_unregister, other, 0, 0),
        )
        for step, connection, connections, users in steps:
            step(state, connection, "news")
            counts = (state.connection_count, state.user_count)
            expect(
                counts == (connections, users),
                f"after {step.__name__.lstrip('_')} {connection!r}: (connection_count, "
                f"user_count) is {counts}, expected {(connections, users)}",
            )


def check_socket_state_survives_churn_without_leaking(factory: SocketStateFactory) -> None:
    """1,000 overlapping connect/disconnect cycles keep the counts right and leave nothing."""
    with _connections() as make:
        state = _new_state(factory)
        live: list[tuple[Connection, str]] = []
        for cycle in range(1000):
            connection = make(None if cycle % 10 == 0 else f"user-{cycle % 7}")
            topic = f"topic-{cycle % 3}"
            _register(state, connection, topic)
            live.append((connection, topic))
            if len(live) > 3:
                gone, gone_topic = live.pop(cycle % 4)
                _unregister(state, gone, gone_topic)
            users = {c.user_id for c, _ in live if c.user_id is not None}
            counts = (state.connection_count, state.user_count)
            expect(
                counts == (len(live), len(users)),
                f"cycle {cycle}: (connection_count, user_count) is {counts}, "
                f"expected {(len(live), len(users))}",
            )
        for connection, topic in live:
            _unregister(state, connection, topic)
        _expect_empty(state, "churn leaves nothing behind")


SOCKET_STATE_CHECKS: tuple[Callable[[SocketStateFactory], None], ...] = (
    check_socket_state_add_reports_first_connection,
    check_socket_state_remove_reports_last_connection,
    check_socket_state_remove_of_absent_connection_is_a_no_op,
    check_socket_state_members_reflect_adds_and_removes,
    check_socket_state_forgets_empty_keys,
    check_socket_state_counts_distinct_connections_and_users,
    check_socket_state_survives_churn_without_leaking,
)
"""Every socket-state check, for a test suite to parametrize over."""


def check_socket_state(factory: SocketStateFactory) -> None:
    """Run every check in :data:`SOCKET_STATE_CHECKS` against states from ``factory``."""
    for check in SOCKET_STATE_CHECKS:
        check(factory)
