"""The contracts of :mod:`notifykit.protocols` as checks any implementation can run.

Like trio's ``trio.testing.check_*_stream`` helpers, each check states one rule in its docstring
and raises :class:`AssertionError` with a message naming the rule when an implementation breaks
it. notifykit runs every check against every implementation it ships; a third-party
implementation runs them from its own test suite::

    @pytest.mark.anyio
    @pytest.mark.parametrize("check", PROPAGATOR_CHECKS, ids=lambda c: c.__name__)
    async def test_my_propagator(check, my_factory):
        await check(my_factory)

Nothing here needs pytest. Every wait is bounded: each check takes ``timeout=`` (seconds any one
wait may take, default 5; a test that expects a check to fail can pass a short one), and the
checks work under ``python -O``.

A :data:`PropagatorFactory` returns, on every call, an async context manager yielding a new,
*unstarted* propagator on the same backend as the others (for Redis: the same server), as the
instances of one deployment are. The checks call ``start``, ``aclose`` (then leave the context)
themselves. Keys are unique per check run, so one backend can serve every check.

Absence is proved with sentinels, never with a sleep: after publishing what must not arrive, a
check publishes to a key every instance is still subscribed to and waits until that arrives
everywhere (the pipe is flowing); then once more, so that every reader of every instance has had
its turn (a backend that reads each shard on its own connection delivers in publish order per
key only); then it looks.
"""

from __future__ import annotations

from ._propagator_checks import (
    PROPAGATOR_CHECKS,
    PropagatorCheck,
    check_propagator,
    check_propagator_aclose_is_idempotent_and_final,
    check_propagator_delivers_own_publishes,
    check_propagator_delivers_to_every_subscriber_once,
    check_propagator_keeps_payload_bytes_identical,
    check_propagator_keeps_per_key_order_and_loses_nothing,
    check_propagator_last_subscribe_or_unsubscribe_wins,
    check_propagator_multi_key_publish_delivers_once_per_key,
    check_propagator_publish_without_subscribers_succeeds,
    check_propagator_reports_healthy_once_started,
    check_propagator_routes_only_subscribed_keys,
    check_propagator_statistics_map_names_to_counts,
    check_propagator_subscribe_is_confirmed_on_return,
    check_propagator_subscribe_is_idempotent,
    check_propagator_survives_a_raising_deliver,
    check_propagator_unsubscribe_stops_delivery,
    check_propagator_unsubscribe_unknown_key_is_a_no_op,
)
from ._propagator_harness import PropagatorFactory
from ._socket_state_checks import (
    SOCKET_STATE_CHECKS,
    SocketStateFactory,
    check_socket_state,
    check_socket_state_add_reports_first_connection,
    check_socket_state_counts_distinct_connections_and_users,
    check_socket_state_forgets_empty_keys,
    check_socket_state_members_reflect_adds_and_removes,
    check_socket_state_remove_of_absent_connection_is_a_no_op,
    check_socket_state_remove_reports_last_connection,
    check_socket_state_survives_churn_without_leaking,
)

__all__ = [
    "PROPAGATOR_CHECKS",
    "SOCKET_STATE_CHECKS",
    "PropagatorCheck",
    "PropagatorFactory",
    "SocketStateFactory",
    "check_propagator",
    "check_propagator_aclose_is_idempotent_and_final",
    "check_propagator_delivers_own_publishes",
    "check_propagator_delivers_to_every_subscriber_once",
    "check_propagator_keeps_payload_bytes_identical",
    "check_propagator_keeps_per_key_order_and_loses_nothing",
    "check_propagator_last_subscribe_or_unsubscribe_wins",
    "check_propagator_multi_key_publish_delivers_once_per_key",
    "check_propagator_publish_without_subscribers_succeeds",
    "check_propagator_reports_healthy_once_started",
    "check_propagator_routes_only_subscribed_keys",
    "check_propagator_statistics_map_names_to_counts",
    "check_propagator_subscribe_is_confirmed_on_return",
    "check_propagator_subscribe_is_idempotent",
    "check_propagator_survives_a_raising_deliver",
    "check_propagator_unsubscribe_stops_delivery",
    "check_propagator_unsubscribe_unknown_key_is_a_no_op",
    "check_socket_state",
    "check_socket_state_add_reports_first_connection",
    "check_socket_state_counts_distinct_connections_and_users",
    "check_socket_state_forgets_empty_keys",
    "check_socket_state_members_reflect_adds_and_removes",
    "check_socket_state_remove_of_absent_connection_is_a_no_op",
    "check_socket_state_remove_reports_last_connection",
    "check_socket_state_survives_churn_without_leaking",
]
