"""The body of ``POST /publish``: every target kind, and every way a body is refused (with why)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifykit.adapters.asgi.publish import PublishRequest, parse_publish
from notifykit.errors import InvalidNotification
from notifykit.model import ToAuthenticated, ToEveryone, ToTopic, ToUsers


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    ("fields", "target"),
    [
        pytest.param({"user": "42"}, ToUsers(("42",)), id="user"),
        pytest.param({"users": ["1", "2"]}, ToUsers(("1", "2")), id="users"),
        pytest.param({"users": ["1"]}, ToUsers(("1",)), id="one-of-users"),
        pytest.param({"topic": "team:7"}, ToTopic("team:7"), id="topic"),
        pytest.param({"authenticated": True}, ToAuthenticated(), id="authenticated"),
        pytest.param({"broadcast": True}, ToEveryone(), id="broadcast"),
    ],
)
def test_every_target_kind_parses(fields: dict[str, Any], target: Any) -> None:
    assert parse_publish(body(event="order.shipped", **fields)) == PublishRequest(
        target, "order.shipped"
    )


def test_data_and_exclude_are_carried() -> None:
    request = parse_publish(
        body(event="e", user="42", data={"order": 7, "items": [1, None]}, exclude="conn-1")
    )
    assert request == PublishRequest(
        ToUsers(("42",)), "e", {"order": 7, "items": [1, None]}, "conn-1"
    )


@pytest.mark.parametrize("data", [None, 0, "", [], {}, False, 1.5, "text"])
def test_data_may_be_any_json_value(data: Any) -> None:
    assert parse_publish(body(event="e", broadcast=True, data=data)).data == data


def test_data_defaults_to_null_and_exclude_to_none() -> None:
    request = parse_publish(b'{"event":"e","broadcast":true}')
    assert (request.data, request.exclude) == (None, None)


def test_an_explicit_null_exclude_is_no_exclude() -> None:
    assert parse_publish(body(event="e", broadcast=True, exclude=None)).exclude is None


def test_the_body_may_be_utf8_with_non_ascii_text() -> None:
    request = parse_publish('{"event":"e","user":"é","data":"☃"}'.encode())
    assert (request.target, request.data) == (ToUsers(("é",)), "☃")


BAD_BODIES = [
    pytest.param(b"", "not valid JSON", id="empty"),
    pytest.param(b"event=e&user=42", "not valid JSON", id="form-encoded"),
    pytest.param(b'{"event":"e",', "not valid JSON", id="truncated"),
    pytest.param(b"\xff\xfe\x00", "not valid JSON", id="not-utf8"),
    pytest.param(b"[" * 100_000, "deeper than data may", id="deeply-nested"),
    pytest.param(b"[]", "must be a JSON object", id="array"),
    pytest.param(b'"e"', "must be a JSON object", id="string"),
    pytest.param(b"null", "must be a JSON object", id="null"),
    pytest.param(body(event="e", user="1", usr="2"), "unknown field(s): usr", id="unknown-field"),
    pytest.param(
        body(event="e", user="1", b=1, a=2), "unknown field(s): a, b", id="unknown-fields-sorted"
    ),
    pytest.param(body(user="1"), "event must be a non-empty string", id="no-event"),
    pytest.param(body(event="", user="1"), "event must be a non-empty string", id="empty-event"),
    pytest.param(body(event=7, user="1"), "event must be a non-empty string", id="int-event"),
    pytest.param(body(event=None, user="1"), "event must be a non-empty string", id="null-event"),
    pytest.param(body(event="e"), "exactly one target", id="no-target"),
    pytest.param(body(event="e", data=1), "exactly one target", id="data-but-no-target"),
    pytest.param(body(event="e", user="1", topic="t"), "exactly one target", id="two-targets"),
    pytest.param(
        body(event="e", authenticated=True, broadcast=True), "exactly one target", id="two-flags"
    ),
    pytest.param(body(event="e", user=42), "user id", id="int-user"),
    pytest.param(body(event="e", user=["42"]), "user id", id="list-user"),
    pytest.param(body(event="e", user=None), "user id", id="null-user"),
    pytest.param(body(event="e", user=""), "user id", id="empty-user"),
    pytest.param(body(event="e", user="x" * 257), "user id", id="long-user"),
    pytest.param(body(event="e", users="42"), '"users" must be a list of user ids', id="str-users"),
    pytest.param(body(event="e", users=[1, 2]), "user id", id="int-users"),
    pytest.param(body(event="e", users=["1", None]), "user id", id="null-in-users"),
    pytest.param(
        body(event="e", users={"a": 1}), '"users" must be a list of user ids', id="object-users"
    ),
    pytest.param(body(event="e", users=[]), "at least one user", id="empty-users"),
    pytest.param(body(event="e", users=["1", ""]), "user id", id="empty-user-in-users"),
    pytest.param(body(event="e", topic=7), "topic name", id="int-topic"),
    pytest.param(body(event="e", topic=""), "topic name", id="empty-topic"),
    pytest.param(body(event="e", topic="a b"), "topic name", id="invalid-topic"),
    pytest.param(body(event="e", topic="t" * 257), "topic name", id="long-topic"),
    pytest.param(
        body(event="e", authenticated=False), '"authenticated" must be true', id="auth-false"
    ),
    pytest.param(body(event="e", authenticated=1), '"authenticated" must be true', id="auth-one"),
    pytest.param(
        body(event="e", authenticated="true"), '"authenticated" must be true', id="auth-str"
    ),
    pytest.param(
        body(event="e", broadcast=False), '"broadcast" must be true', id="broadcast-false"
    ),
    pytest.param(body(event="e", broadcast=None), '"broadcast" must be true', id="broadcast-null"),
    pytest.param(
        body(event="e", user="1", exclude=5), "exclude must be a connection id", id="int-exclude"
    ),
    pytest.param(
        body(event="e", user="1", exclude=["c"]),
        "exclude must be a connection id",
        id="list-exclude",
    ),
]


@pytest.mark.parametrize(("raw", "fragment"), BAD_BODIES)
def test_a_bad_body_is_refused_saying_why(raw: bytes, fragment: str) -> None:
    with pytest.raises(InvalidNotification) as info:
        parse_publish(raw)
    assert fragment in str(info.value)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary())
def test_any_bytes_raise_nothing_but_invalid_notification(raw: bytes) -> None:
    with contextlib.suppress(InvalidNotification):
        parse_publish(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["event", "data", "exclude", "user", "users", "topic", "broadcast"]),
        json_values,
    )
)
def test_any_body_shaped_object_raises_nothing_but_invalid_notification(
    obj: dict[str, Any],
) -> None:
    with contextlib.suppress(InvalidNotification):
        parse_publish(json.dumps(obj).encode())
