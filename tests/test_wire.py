"""The notifykit.v1 wire protocol: every frame on exact JSON text, and what is refused.

Like websockets' ``tests/test_frames.py``: one helper per direction checks parsing and encoding
at once, so each case states the frame's exact text on the wire.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifykit.errors import ProtocolError
from notifykit.wire import (
    SUBPROTOCOL,
    ClientFrame,
    CloseCode,
    Error,
    ErrorCode,
    Notification,
    Ping,
    Pong,
    Position,
    Refresh,
    Refreshed,
    ServerFrame,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Welcome,
    encode,
    encode_notification,
    parse_client,
    parse_positions,
    parse_server,
    with_position,
)

PROTOCOL_DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def assert_client_frame(text: str, frame: ClientFrame) -> None:
    """``text`` parses to ``frame`` and ``frame`` encodes to exactly ``text``."""
    assert parse_client(text) == frame
    assert encode(frame) == text


def assert_server_frame(text: str, frame: ServerFrame) -> None:
    """``text`` parses to ``frame`` and ``frame`` encodes to exactly ``text``."""
    assert parse_server(text) == frame
    assert encode(frame) == text


def client_error(text: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_client(text)
    return info.value


# --- client frames on exact text ----------------------------------------------------------


def test_ping() -> None:
    assert_client_frame('{"type":"ping"}', Ping())


def test_ping_with_ref() -> None:
    assert_client_frame('{"type":"ping","ref":"p-1"}', Ping("p-1"))


def test_refresh() -> None:
    assert_client_frame('{"type":"refresh","token":"a.b.c"}', Refresh("a.b.c"))


def test_refresh_with_ref() -> None:
    assert_client_frame('{"type":"refresh","token":"a.b.c","ref":"r"}', Refresh("a.b.c", "r"))


def test_subscribe() -> None:
    assert_client_frame('{"type":"subscribe","topic":"team:7"}', Subscribe("team:7"))


def test_subscribe_with_ref() -> None:
    assert_client_frame(
        '{"type":"subscribe","topic":"team:7","ref":"42"}', Subscribe("team:7", "42")
    )


def test_unsubscribe() -> None:
    assert_client_frame('{"type":"unsubscribe","topic":"team:7"}', Unsubscribe("team:7"))


def test_unsubscribe_with_ref() -> None:
    assert_client_frame(
        '{"type":"unsubscribe","topic":"team:7","ref":"x y"}', Unsubscribe("team:7", "x y")
    )


def test_client_frames_ignore_unknown_fields() -> None:
    assert parse_client('{"type":"ping","client":"web/1.2","extra":{"a":[1]}}') == Ping()
    assert parse_client('{"extra":1,"topic":"t","type":"subscribe"}') == Subscribe("t")


def test_a_null_ref_is_no_ref() -> None:
    assert parse_client('{"type":"ping","ref":null}') == Ping()


def test_ref_may_be_any_printable_ascii_up_to_64_characters() -> None:
    printable = "".join(chr(c) for c in range(0x20, 0x7F))
    assert parse_client(json.dumps({"type": "ping", "ref": printable[:64]})) == Ping(printable[:64])
    assert parse_client(json.dumps({"type": "ping", "ref": printable[64:]})) == Ping(printable[64:])


def test_token_may_be_8192_characters() -> None:
    token = "t" * 8192
    assert parse_client(json.dumps({"type": "refresh", "token": token})) == Refresh(token)


def test_topic_may_be_256_characters() -> None:
    topic = "t" * 256
    assert parse_client(json.dumps({"type": "subscribe", "topic": topic})) == Subscribe(topic)


def test_encoding_keeps_non_ascii_text_as_is() -> None:
    assert encode(Subscribe("équipe")) == '{"type":"subscribe","topic":"équipe"}'


# --- server frames on exact text ----------------------------------------------------------


def test_welcome() -> None:
    assert_server_frame(
        '{"type":"welcome","connection_id":"c1","user":"42","expires_at":1700000000,'
        '"positions":{}}',
        Welcome("c1", "42", 1700000000),
    )


def test_welcome_without_expiry_leaves_expires_at_out() -> None:
    assert_server_frame(
        '{"type":"welcome","connection_id":"c1","user":"42","positions":{}}', Welcome("c1", "42")
    )


def test_anonymous_welcome_keeps_user_as_null() -> None:
    assert_server_frame(
        '{"type":"welcome","connection_id":"c1","user":null,"positions":{}}', Welcome("c1", None)
    )


def test_welcome_gives_positions_and_after_a_resume_whether_it_recovered() -> None:
    assert_server_frame(
        '{"type":"welcome","connection_id":"c1","user":"42","positions":'
        '{"u:42":{"epoch":"ab12","offset":17},"all":{"epoch":"cd34","offset":0}},'
        '"recovered":false}',
        Welcome(
            "c1", "42", None, {"u:42": Position("ab12", 17), "all": Position("cd34", 0)}, False
        ),
    )


def test_a_notification_carries_its_place_in_its_stream() -> None:
    assert_server_frame(
        '{"type":"notification","id":"0ABC","event":"e","data":1,"ts":5,'
        '"stream":"u:42","offset":3,"epoch":"ab12"}',
        Notification("0ABC", "e", 1, 5, None, "u:42", 3, "ab12"),
    )


def test_with_position_escapes_the_stream_name() -> None:
    frame = with_position(encode(Notification("0ABC", "e", 1, 5)), 'u:"x\\', Position("e1", 9))
    assert parse_server(frame) == Notification("0ABC", "e", 1, 5, None, 'u:"x\\', 9, "e1")


def test_subscribed_gives_the_topic_position_and_after_since_whether_it_recovered() -> None:
    assert_server_frame(
        '{"type":"subscribed","topic":"news","ref":"s1","position":{"epoch":"ab","offset":4},'
        '"recovered":true}',
        Subscribed("news", "s1", Position("ab", 4), True),
    )


def test_subscribe_may_say_since_where() -> None:
    assert parse_client(
        '{"type":"subscribe","topic":"news","since":{"epoch":"ab","offset":4}}'
    ) == Subscribe("news", None, Position("ab", 4))


@pytest.mark.parametrize(
    "since",
    [
        pytest.param("3", id="string"),
        pytest.param({"epoch": "ab"}, id="no-offset"),
        pytest.param({"offset": 3}, id="no-epoch"),
        pytest.param({"epoch": "ab", "offset": -1}, id="negative"),
        pytest.param({"epoch": "ab", "offset": True}, id="bool"),
        pytest.param({"epoch": "ab", "offset": 1.5}, id="float"),
        pytest.param({"epoch": "a b", "offset": 1}, id="bad-epoch"),
        pytest.param({"epoch": "", "offset": 1}, id="empty-epoch"),
        pytest.param({"epoch": "a" * 65, "offset": 1}, id="long-epoch"),
        pytest.param({"epoch": "ab", "offset": 2**63}, id="huge"),
    ],
)
def test_subscribe_refuses_a_since_that_is_no_position(since: object) -> None:
    frame = json.dumps({"type": "subscribe", "topic": "news", "since": since, "ref": "r"})
    with pytest.raises(ProtocolError) as info:
        parse_client(frame)
    assert info.value.code == ErrorCode.BAD_FRAME
    assert info.value.ref == "r"


def test_resume_positions_parse() -> None:
    assert parse_positions('{"u:42":{"epoch":"ab","offset":3}}') == {"u:42": Position("ab", 3)}
    assert parse_positions("{}") == {}


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("not json", id="not-json"),
        pytest.param("[]", id="array"),
        pytest.param('{"u:1": 3}', id="not-a-position"),
        pytest.param('{"": {"epoch": "ab", "offset": 1}}', id="empty-stream"),
        pytest.param(json.dumps({"x" * 301: {"epoch": "ab", "offset": 1}}), id="long-stream"),
        pytest.param(
            json.dumps({f"s{i}": {"epoch": "ab", "offset": 1} for i in range(17)}), id="too-many"
        ),
        pytest.param('{"u:1": {"epoch": "ab", "offset": NaN}}', id="nan"),
        pytest.param("[" * 100_000, id="deep"),
    ],
)
def test_resume_refuses_anything_else(text: str) -> None:
    with pytest.raises(ProtocolError):
        parse_positions(text)


def test_notification() -> None:
    assert_server_frame(
        '{"type":"notification","id":"0ABC","event":"order.shipped",'
        '"data":{"order":7,"items":[1,2.5,null,true,"x"]},"ts":1700000000123}',
        Notification(
            "0ABC", "order.shipped", {"order": 7, "items": [1, 2.5, None, True, "x"]}, 1700000000123
        ),
    )


def test_notification_to_a_topic_carries_the_topic() -> None:
    assert_server_frame(
        '{"type":"notification","id":"0ABC","event":"e","data":1,"ts":5,"topic":"team:7"}',
        Notification("0ABC", "e", 1, 5, "team:7"),
    )


def test_notification_data_null_is_kept() -> None:
    assert_server_frame(
        '{"type":"notification","id":"0ABC","event":"e","data":null,"ts":5}',
        Notification("0ABC", "e", None, 5),
    )


def test_pong() -> None:
    assert_server_frame('{"type":"pong"}', Pong())


def test_pong_echoes_ref() -> None:
    assert_server_frame('{"type":"pong","ref":"p-1"}', Pong("p-1"))


def test_subscribed() -> None:
    assert_server_frame(
        '{"type":"subscribed","topic":"team:7","ref":"1"}', Subscribed("team:7", "1")
    )


def test_unsubscribed() -> None:
    assert_server_frame('{"type":"unsubscribed","topic":"team:7"}', Unsubscribed("team:7"))


def test_refreshed() -> None:
    assert_server_frame(
        '{"type":"refreshed","expires_at":1700003600,"ref":"r"}', Refreshed(1700003600, "r")
    )


def test_refreshed_without_expiry_leaves_expires_at_out() -> None:
    assert_server_frame('{"type":"refreshed"}', Refreshed(None))


def test_error() -> None:
    assert_server_frame(
        '{"type":"error","code":"forbidden","message":"not allowed","ref":"1"}',
        Error("forbidden", "not allowed", "1"),
    )


def test_error_without_ref() -> None:
    assert_server_frame(
        '{"type":"error","code":"bad_frame","message":"frame is not valid JSON"}',
        Error("bad_frame", "frame is not valid JSON"),
    )


def test_server_frames_ignore_unknown_fields() -> None:
    text = '{"type":"pong","server":"eu-1","ref":"a","future":{"x":1}}'
    assert parse_server(text) == Pong("a")


# --- what parse_client refuses ------------------------------------------------------------

BAD_CLIENT_FRAMES = [
    pytest.param("", ErrorCode.BAD_FRAME, id="empty"),
    pytest.param("ping", ErrorCode.BAD_FRAME, id="not-json"),
    pytest.param('{"type":"ping"', ErrorCode.BAD_FRAME, id="truncated"),
    pytest.param("[]", ErrorCode.BAD_FRAME, id="array"),
    pytest.param('"ping"', ErrorCode.BAD_FRAME, id="string"),
    pytest.param("1", ErrorCode.BAD_FRAME, id="number"),
    pytest.param("null", ErrorCode.BAD_FRAME, id="null"),
    pytest.param("NaN", ErrorCode.BAD_FRAME, id="nan"),
    pytest.param("{}", ErrorCode.BAD_FRAME, id="no-type"),
    pytest.param('{"type":null}', ErrorCode.BAD_FRAME, id="null-type"),
    pytest.param('{"type":1}', ErrorCode.BAD_FRAME, id="number-type"),
    pytest.param('{"type":["ping"]}', ErrorCode.BAD_FRAME, id="list-type"),
    pytest.param('{"type":"nope"}', ErrorCode.UNKNOWN_TYPE, id="unknown-type"),
    pytest.param('{"type":""}', ErrorCode.UNKNOWN_TYPE, id="empty-type"),
    pytest.param('{"type":"PING"}', ErrorCode.UNKNOWN_TYPE, id="types-are-case-sensitive"),
    pytest.param('{"type":"pong"}', ErrorCode.UNKNOWN_TYPE, id="server-frame-from-client"),
    pytest.param('{"type":"notification"}', ErrorCode.UNKNOWN_TYPE, id="notification"),
    pytest.param('{"type":"subscribe"}', ErrorCode.BAD_FRAME, id="subscribe-no-topic"),
    pytest.param('{"type":"subscribe","topic":""}', ErrorCode.BAD_FRAME, id="empty-topic"),
    pytest.param('{"type":"subscribe","topic":7}', ErrorCode.BAD_FRAME, id="number-topic"),
    pytest.param('{"type":"subscribe","topic":null}', ErrorCode.BAD_FRAME, id="null-topic"),
    pytest.param(
        json.dumps({"type": "subscribe", "topic": ""}), ErrorCode.BAD_FRAME, id="empty-topic"
    ),
    pytest.param('{"type":"unsubscribe"}', ErrorCode.BAD_FRAME, id="unsubscribe-no-topic"),
    pytest.param('{"type":"refresh"}', ErrorCode.BAD_FRAME, id="refresh-no-token"),
    pytest.param('{"type":"refresh","token":""}', ErrorCode.BAD_FRAME, id="empty-token"),
    pytest.param('{"type":"refresh","token":{"a":1}}', ErrorCode.BAD_FRAME, id="object-token"),
    pytest.param(
        json.dumps({"type": "refresh", "token": "t" * 8193}), ErrorCode.BAD_FRAME, id="long-token"
    ),
    pytest.param('{"type":"ping","ref":""}', ErrorCode.BAD_FRAME, id="empty-ref"),
    pytest.param('{"type":"ping","ref":1}', ErrorCode.BAD_FRAME, id="number-ref"),
    pytest.param('{"type":"ping","ref":NaN}', ErrorCode.BAD_FRAME, id="nan-ref"),
    pytest.param(json.dumps({"type": "ping", "ref": "r" * 65}), ErrorCode.BAD_FRAME, id="long-ref"),
    pytest.param('{"type":"ping","ref":"é"}', ErrorCode.BAD_FRAME, id="non-ascii-ref"),
    pytest.param('{"type":"ping","ref":"a\\nb"}', ErrorCode.BAD_FRAME, id="control-char-ref"),
    pytest.param('{"type":"ping","ref":"\\u007f"}', ErrorCode.BAD_FRAME, id="del-ref"),
    pytest.param(b'{"type":"ping"}', ErrorCode.BAD_FRAME, id="binary-frame"),
    pytest.param(b"\xff\xfe", ErrorCode.BAD_FRAME, id="binary-garbage"),
    pytest.param("[" * 100_000, ErrorCode.BAD_FRAME, id="deeply-nested-arrays"),
    pytest.param('{"a":' * 100_000, ErrorCode.BAD_FRAME, id="deeply-nested-objects"),
    pytest.param(
        '{"type":"ping","x":' + "[" * 100_000 + "]" * 100_000 + "}",
        ErrorCode.BAD_FRAME,
        id="deeply-nested-ignored-field",
    ),
]


@pytest.mark.parametrize(("text", "code"), BAD_CLIENT_FRAMES)
def test_parse_client_refuses_invalid_frames_with_an_error_code(
    text: str | bytes, code: str
) -> None:
    error = client_error(text)
    assert error.code == code
    assert str(error)  # the message sent back to the client is never empty


def test_unknown_type_message_names_the_type_but_not_all_of_a_long_one() -> None:
    assert "nope" in str(client_error('{"type":"nope"}'))
    assert "x" * 33 not in str(client_error(json.dumps({"type": "x" * 1000})))


def test_protocol_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_client("{")


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"unsubscribe","topic":"\\ud800"}',
        '{"type":"subscribe","topic":"a\\udfff"}',
    ],
)
def test_parse_client_refuses_text_that_is_not_valid_unicode(text: str) -> None:
    assert client_error(text).code == ErrorCode.BAD_FRAME


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_frames_with_non_json_constants_are_refused(constant: str) -> None:
    with pytest.raises(ProtocolError):
        parse_client('{"type":"ping","x":' + constant + "}")
    with pytest.raises(ProtocolError):
        parse_server('{"type":"notification","id":"a","event":"e","data":' + constant + ',"ts":1}')


# --- what parse_server refuses ------------------------------------------------------------

BAD_SERVER_FRAMES = [
    pytest.param("nope", ErrorCode.BAD_FRAME, id="not-json"),
    pytest.param("[]", ErrorCode.BAD_FRAME, id="array"),
    pytest.param('{"type":"ping"}', ErrorCode.UNKNOWN_TYPE, id="client-frame-from-server"),
    pytest.param(
        '{"type":"welcome","connection_id":"c"}', ErrorCode.BAD_FRAME, id="welcome-no-user"
    ),
    pytest.param('{"type":"welcome","user":"u"}', ErrorCode.BAD_FRAME, id="welcome-no-id"),
    pytest.param(
        '{"type":"welcome","connection_id":"c","user":1}', ErrorCode.BAD_FRAME, id="number-user"
    ),
    pytest.param(
        '{"type":"welcome","connection_id":"c","user":null,"expires_at":1.5}',
        ErrorCode.BAD_FRAME,
        id="float-expiry",
    ),
    pytest.param(
        '{"type":"notification","id":"a","event":"e","ts":1}', ErrorCode.BAD_FRAME, id="no-data"
    ),
    pytest.param(
        '{"type":"notification","id":"a","event":"e","data":1,"ts":true}',
        ErrorCode.BAD_FRAME,
        id="bool-ts",
    ),
    pytest.param(
        '{"type":"notification","id":"a","event":"e","data":1,"ts":1,"topic":2}',
        ErrorCode.BAD_FRAME,
        id="number-topic",
    ),
    pytest.param('{"type":"subscribed"}', ErrorCode.BAD_FRAME, id="subscribed-no-topic"),
    pytest.param('{"type":"refreshed","expires_at":"soon"}', ErrorCode.BAD_FRAME, id="str-expiry"),
    pytest.param('{"type":"error","code":"x"}', ErrorCode.BAD_FRAME, id="error-no-message"),
    pytest.param('{"type":"pong","ref":5}', ErrorCode.BAD_FRAME, id="number-ref"),
    pytest.param(b'{"type":"pong"}', ErrorCode.BAD_FRAME, id="binary-frame"),
]


@pytest.mark.parametrize(("text", "code"), BAD_SERVER_FRAMES)
def test_parse_server_refuses_invalid_frames(text: str | bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_server(text)
    assert info.value.code == code


# --- encode_notification ------------------------------------------------------------------


def test_encode_notification_is_the_notification_frame() -> None:
    frame = Notification("0ABC", "e", {"k": "v"}, 7, "team:1")
    assert encode_notification("0ABC", "e", {"k": "v"}, 7, "team:1") == encode(frame)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({1, 2}, id="set"),
        pytest.param(object(), id="object"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="inf"),
        pytest.param({"nested": [-math.inf]}, id="nested-inf"),
        pytest.param({("a", "b"): 1}, id="tuple-key"),
    ],
)
def test_encode_notification_refuses_data_that_is_not_json(data: Any) -> None:
    with pytest.raises(ValueError, match="JSON"):
        encode_notification("0ABC", "e", data, 1)


# --- codes --------------------------------------------------------------------------------


def test_subprotocol_name() -> None:
    assert SUBPROTOCOL == "notifykit.v1"


def test_close_codes_are_the_documented_ones() -> None:
    assert {code.name: code.value for code in CloseCode} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "MESSAGE_TOO_BIG": 1009,
        "INTERNAL_ERROR": 1011,
        "TRY_AGAIN_LATER": 1013,
        "UNAUTHORIZED": 4001,
        "FORBIDDEN": 4003,
        "SLOW_CONSUMER": 4008,
        "BAD_FRAME": 4400,
        "TOO_MANY_CONNECTIONS": 4409,
        "RATE_LIMITED": 4429,
    }


def test_error_codes_are_the_documented_ones() -> None:
    codes = {name: value for name, value in vars(ErrorCode).items() if name.isupper()}
    assert codes == {
        "BAD_FRAME": "bad_frame",
        "UNKNOWN_TYPE": "unknown_type",
        "FRAME_TOO_LARGE": "frame_too_large",
        "FORBIDDEN": "forbidden",
        "INVALID_TOPIC": "invalid_topic",
        "UNAVAILABLE": "unavailable",
        "RATE_LIMITED": "rate_limited",
    }


def test_protocol_doc_names_every_close_code_error_code_and_frame_type() -> None:
    doc = PROTOCOL_DOC.read_text(encoding="utf-8")
    for close_code in CloseCode:
        assert f"`{close_code.value}`" in doc, close_code
    for name, value in vars(ErrorCode).items():
        if name.isupper():
            assert f"`{value}`" in doc, value
    samples: list[ClientFrame | ServerFrame] = [
        Ping(),
        Refresh("t"),
        Subscribe("t"),
        Unsubscribe("t"),
        Welcome("c", None),
        Notification("i", "e", None, 0),
        Pong(),
        Subscribed("t"),
        Unsubscribed("t"),
        Refreshed(None),
        Error("c", "m"),
    ]
    for frame in samples:
        kind = json.loads(encode(frame))["type"]
        assert f'"type": "{kind}"' in doc, kind


# --- properties ---------------------------------------------------------------------------

# No deadline and no "too slow" check: these are correctness properties, and a loaded CI machine
# must not turn them into timing assertions.
property_test = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

refs = st.none() | st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=64
)
topics = st.text(min_size=1, max_size=256)
tokens = st.text(min_size=1, max_size=8192)

client_frames: st.SearchStrategy[ClientFrame] = st.one_of(
    st.builds(Ping, refs),
    st.builds(Refresh, tokens, refs),
    st.builds(Subscribe, topics, refs),
    st.builds(Unsubscribe, topics, refs),
)

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)

texts = st.text()
maybe_texts = st.none() | st.text()
maybe_ints = st.none() | st.integers()

server_frames: st.SearchStrategy[ServerFrame] = st.one_of(
    st.builds(Welcome, texts, maybe_texts, maybe_ints),
    st.builds(Notification, texts, texts, json_values, st.integers(), maybe_texts),
    st.builds(Pong, maybe_texts),
    st.builds(Subscribed, texts, maybe_texts),
    st.builds(Unsubscribed, texts, maybe_texts),
    st.builds(Refreshed, maybe_ints, maybe_texts),
    st.builds(Error, texts, texts, maybe_texts),
)


@property_test
@given(client_frames)
def test_any_valid_client_frame_round_trips(frame: ClientFrame) -> None:
    assert parse_client(encode(frame)) == frame


@property_test
@given(server_frames)
def test_any_server_frame_round_trips(frame: ServerFrame) -> None:
    assert parse_server(encode(frame)) == frame


@property_test
@given(st.text())
def test_parse_client_raises_only_protocol_error_for_any_text(text: str) -> None:
    with contextlib.suppress(ProtocolError):
        parse_client(text)


@property_test
@given(st.binary())
def test_parse_client_raises_only_protocol_error_for_any_bytes(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_client(data)


# JSON objects shaped almost like frames reach the field checks that random text rarely does.
frame_like = st.dictionaries(
    st.sampled_from(["type", "ref", "topic", "token", "id", "data", "user", "expires_at"]),
    json_values | st.sampled_from(["ping", "refresh", "subscribe", "unsubscribe", "welcome"]),
)


@property_test
@given(frame_like)
def test_parse_client_raises_only_protocol_error_for_any_frame_like_object(
    obj: dict[str, Any],
) -> None:
    with contextlib.suppress(ProtocolError):
        parse_client(json.dumps(obj))


@property_test
@given(frame_like)
def test_parse_server_raises_only_protocol_error_for_any_frame_like_object(
    obj: dict[str, Any],
) -> None:
    with contextlib.suppress(ProtocolError):
        parse_server(json.dumps(obj))


@property_test
@given(st.one_of(st.sets(st.integers(), min_size=1), st.just(math.nan), st.builds(object)))
def test_encode_notification_raises_value_error_for_non_json_data(data: Any) -> None:
    with pytest.raises(ValueError, match="JSON"):
        encode_notification("0ABC", "e", {"nested": [data]}, 1)


def test_a_refused_frame_still_carries_its_valid_ref() -> None:
    assert client_error('{"type":"subscribe","ref":"r1"}').ref == "r1"
    assert client_error('{"type":"nope","ref":"r2"}').ref == "r2"


def test_a_refused_frame_with_an_invalid_ref_carries_none() -> None:
    assert client_error('{"type":"subscribe","ref":""}').ref is None
