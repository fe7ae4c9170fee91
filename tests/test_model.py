"""Principals, targets and routing keys; topic and user id rules; where a handshake's token is."""

from __future__ import annotations

from typing import Any

import pytest

from notifykit.errors import InvalidNotification
from notifykit.model import (
    AUTHENTICATED_KEY,
    BROADCAST_KEY,
    Handshake,
    Principal,
    ToAuthenticated,
    ToEveryone,
    ToTopic,
    ToUsers,
    routing_keys,
    topic_key,
    user_key,
    users,
    validate_topic,
    validate_user_id,
)

# --- routing keys -------------------------------------------------------------------------


def test_the_documented_key_shapes() -> None:
    assert user_key("42") == "u:42"
    assert topic_key("team:7") == "t:team:7"
    assert AUTHENTICATED_KEY == "auth"
    assert BROADCAST_KEY == "all"


@pytest.mark.parametrize(
    ("target", "keys"),
    [
        pytest.param(ToUsers(("42",)), ("u:42",), id="one-user"),
        pytest.param(ToUsers(("1", "2", "3")), ("u:1", "u:2", "u:3"), id="users"),
        pytest.param(ToUsers(("2", "1", "2", "1")), ("u:2", "u:1"), id="users-deduplicated"),
        pytest.param(ToTopic("team:7"), ("t:team:7",), id="topic"),
        pytest.param(ToAuthenticated(), ("auth",), id="authenticated"),
        pytest.param(ToEveryone(), ("all",), id="everyone"),
    ],
)
def test_routing_keys_per_target(target: Any, keys: tuple[str, ...]) -> None:
    assert routing_keys(target) == keys


def test_a_user_and_a_topic_of_the_same_name_do_not_share_a_key() -> None:
    assert routing_keys(ToUsers(("x",))) != routing_keys(ToTopic("x"))


def test_an_authenticated_principal_joins_its_user_authenticated_and_everyone() -> None:
    principal = Principal("42")
    assert principal.routing_keys() == ("u:42", "auth", "all")
    assert not principal.is_anonymous


def test_an_anonymous_principal_joins_only_everyone() -> None:
    principal = Principal(None)
    assert principal.routing_keys() == ("all",)
    assert principal.is_anonymous


def test_each_target_reaches_the_principals_it_names() -> None:
    alice, anonymous = Principal("alice"), Principal(None)
    assert set(routing_keys(ToUsers(("alice",)))) <= set(alice.routing_keys())
    assert set(routing_keys(ToAuthenticated())) <= set(alice.routing_keys())
    assert not set(routing_keys(ToAuthenticated())) & set(anonymous.routing_keys())
    assert set(routing_keys(ToEveryone())) <= set(anonymous.routing_keys())


# --- targets ------------------------------------------------------------------------------


def test_to_users_needs_at_least_one_user() -> None:
    with pytest.raises(InvalidNotification, match="at least one user"):
        ToUsers(())


@pytest.mark.parametrize("user_ids", [("",), ("1", ""), ("x" * 257,), (42,), (None,)])
def test_to_users_refuses_an_unusable_user_id(user_ids: tuple[Any, ...]) -> None:
    with pytest.raises(InvalidNotification, match="user id"):
        ToUsers(user_ids)


def test_to_topic_refuses_an_invalid_topic() -> None:
    with pytest.raises(InvalidNotification, match="topic name"):
        ToTopic("not a topic")


def test_users_builds_a_target_from_any_iterable() -> None:
    assert users(["1", "2"]) == ToUsers(("1", "2"))
    assert users(str(n) for n in range(3)) == ToUsers(("0", "1", "2"))
    assert users({"only"}) == ToUsers(("only",))


def test_users_refuses_a_single_string() -> None:
    # "abc" would otherwise be the three users "a", "b" and "c".
    with pytest.raises(InvalidNotification, match="not a single string"):
        users("abc")


def test_users_refuses_an_empty_iterable() -> None:
    with pytest.raises(InvalidNotification):
        users([])


# --- topic names and user ids -------------------------------------------------------------

VALID_TOPICS = [
    "a",
    "team:7",
    "doc/2024/report",
    "user@example.com",
    "a=b+c#d~e-f_g.h",
    "UPPER_lower_0123456789",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:/@=+#~-",
    "x" * 256,
]

INVALID_TOPICS = [
    pytest.param("", id="empty"),
    pytest.param("x" * 257, id="too-long"),
    pytest.param("a b", id="space"),
    pytest.param("team:*", id="wildcard-star"),
    pytest.param("a?b", id="question-mark"),
    pytest.param("a,b", id="comma"),
    pytest.param("a\nb", id="newline"),
    pytest.param("a\x00", id="nul"),
    pytest.param("équipe", id="non-ascii"),
    pytest.param("\uff41", id="fullwidth-letter"),
    pytest.param("٣", id="non-ascii-digit"),
    pytest.param("a\ud800", id="lone-surrogate"),
    pytest.param("topic\n", id="trailing-newline"),
    pytest.param(None, id="none"),
    pytest.param(7, id="int"),
    pytest.param(b"team", id="bytes"),
    pytest.param(["team"], id="list"),
]


@pytest.mark.parametrize("topic", VALID_TOPICS)
def test_validate_topic_accepts(topic: str) -> None:
    assert validate_topic(topic) == topic


@pytest.mark.parametrize("topic", INVALID_TOPICS)
def test_validate_topic_refuses(topic: Any) -> None:
    with pytest.raises(InvalidNotification, match="topic name"):
        validate_topic(topic)


@pytest.mark.parametrize("user_id", ["1", "alice", "user@example.com", "é 😀", "x" * 256])
def test_validate_user_id_accepts_any_non_empty_string_up_to_256(user_id: str) -> None:
    assert validate_user_id(user_id) == user_id


@pytest.mark.parametrize("user_id", ["", "x" * 257, 42, None, b"42", ["42"]])
def test_validate_user_id_refuses(user_id: Any) -> None:
    with pytest.raises(InvalidNotification, match="user id"):
        validate_user_id(user_id)


# --- the handshake's token ----------------------------------------------------------------


def handshake(
    authorization: str | None = None, subprotocols: tuple[str, ...] = (), token: str | None = None
) -> Handshake:
    headers = {} if authorization is None else {"authorization": authorization}
    query = {} if token is None else {"token": token}
    return Handshake(headers=headers, query=query, subprotocols=subprotocols)


TOKEN_SOURCES = [
    pytest.param(handshake(), None, id="none"),
    pytest.param(handshake("Bearer h"), "h", id="header"),
    pytest.param(handshake("bearer h"), "h", id="header-scheme-any-case"),
    pytest.param(handshake("BEARER h"), "h", id="header-scheme-upper-case"),
    pytest.param(handshake("Bearer   h  "), "h", id="header-spaces-trimmed"),
    pytest.param(handshake(subprotocols=("notifykit.v1", "bearer.s")), "s", id="subprotocol"),
    pytest.param(handshake(subprotocols=("bearer.s", "notifykit.v1")), "s", id="subprotocol-first"),
    pytest.param(handshake(token="q"), "q", id="query"),
    pytest.param(
        handshake("Bearer h", ("notifykit.v1", "bearer.s"), "q"), "h", id="header-beats-all"
    ),
    pytest.param(
        handshake(None, ("notifykit.v1", "bearer.s"), "q"), "s", id="subprotocol-beats-query"
    ),
    pytest.param(
        handshake(None, ("bearer.first", "bearer.second")), "first", id="first-subprotocol-wins"
    ),
    pytest.param(handshake("Basic dXNlcjpwYXNz"), None, id="basic-header-ignored"),
    pytest.param(handshake("Basic dXNlcjpwYXNz", token="q"), "q", id="basic-header-falls-through"),
    pytest.param(handshake("Bearer"), None, id="header-without-credentials"),
    pytest.param(handshake("Bearer    "), None, id="header-with-blank-credentials"),
    pytest.param(handshake("Bearer ", token="q"), "q", id="blank-header-falls-through"),
    pytest.param(handshake("h"), None, id="header-without-scheme"),
    pytest.param(handshake(subprotocols=("notifykit.v1", "bearer.")), None, id="bare-bearer-dot"),
    pytest.param(
        handshake(subprotocols=("bearer.", "bearer.s")), "s", id="bare-bearer-dot-skipped"
    ),
    pytest.param(handshake(subprotocols=("bearer.",), token="q"), "q", id="bare-dot-falls-through"),
    pytest.param(handshake(subprotocols=("notifykit.v1",)), None, id="subprotocol-without-token"),
    pytest.param(handshake(subprotocols=("bearers.s",)), None, id="other-prefix"),
    pytest.param(handshake(token=""), None, id="empty-query-token"),
]


@pytest.mark.parametrize(("hs", "expected"), TOKEN_SOURCES)
def test_bearer_token_sources_in_order(hs: Handshake, expected: str | None) -> None:
    assert hs.bearer_token() == expected


def test_other_query_parameters_are_not_tokens() -> None:
    assert Handshake(query={"access_token": "x", "jwt": "y"}).bearer_token() is None
