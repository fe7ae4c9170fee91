"""The client's pure parts: its backoff, its stream positions and resume, its settings.

The position book follows the history contract of issue 8 / ``docs/protocol.md``: ``welcome``
carries ``positions`` (and ``recovered`` after a resume), ``subscribed`` a ``position``, every
notification ``stream``/``offset``/``epoch``; the client sends ``resume`` and ``since`` back.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifykit.client import Backoff, NotifyClient, Position, PositionBook
from notifykit.errors import ConfigurationError

# --- backoff ------------------------------------------------------------------------------


def test_the_ceiling_doubles_from_initial_up_to_the_cap() -> None:
    backoff = Backoff(initial=0.5, maximum=30.0)
    assert [backoff.ceiling(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.ceiling(10_000) == 30.0  # no overflow, however long the outage


@given(attempt=st.integers(0, 200), r=st.floats(0, 1, exclude_max=True))
def test_every_delay_lies_between_half_the_ceiling_and_the_ceiling(attempt: int, r: float) -> None:
    backoff = Backoff(initial=0.2, maximum=10.0, multiplier=3.0)
    delay = backoff.delay(attempt, rand=lambda: r)
    assert backoff.ceiling(attempt) / 2 <= delay <= backoff.ceiling(attempt)
    assert delay >= backoff.initial / 2  # never a busy spin


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": 0}, {"initial": -1}, {"maximum": 0.1}, {"multiplier": 0.5}],
)
def test_a_backoff_that_could_spin_or_shrink_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        Backoff(**kwargs)


# --- positions: welcome and resume ----------------------------------------------------------

WELCOME = {"type": "welcome", "connection_id": "c1", "user": "42"}


def test_with_a_server_that_does_not_number_streams_the_book_stays_empty() -> None:
    book = PositionBook()
    assert book.welcomed(WELCOME) is None
    assert book.accept({"type": "notification", "id": "x", "event": "e", "data": 1, "ts": 1})
    assert book.subscribed("team:7", {"type": "subscribed", "topic": "team:7"}) is None
    assert (book.streams, book.topics) == ({}, {})
    assert book.resume_url("ws://h/ws?token=t") == "ws://h/ws?token=t"
    assert book.since("team:7") is None


def test_a_first_welcome_gives_the_starting_positions() -> None:
    book = PositionBook()
    book.welcomed(
        {
            **WELCOME,
            "positions": {
                "u:42": {"epoch": "ab", "offset": 17},
                "all": {"epoch": "cd", "offset": 0},
            },
        }
    )
    assert book.streams == {"u:42": Position("ab", 17), "all": Position("cd", 0)}


def test_the_resume_parameter_carries_every_stream_position_as_json() -> None:
    book = PositionBook({"u:42": Position("ab", 17), "all": Position("cd", 3)})
    url = book.resume_url("wss://example.com/notify/ws?token=t&resume=old")
    query = parse_qs(urlsplit(url).query)
    assert query["token"] == ["t"]
    assert json.loads(query["resume"][0]) == {
        "u:42": {"epoch": "ab", "offset": 17},
        "all": {"epoch": "cd", "offset": 3},
    }
    assert url.startswith("wss://example.com/notify/ws?")


def test_after_a_continuous_resume_the_client_keeps_its_positions_and_the_replay_moves_them() -> (
    None
):
    book = PositionBook({"u:42": Position("ab", 17)})
    recovered = book.welcomed(
        {**WELCOME, "recovered": True, "positions": {"u:42": {"epoch": "ab", "offset": 19}}}
    )
    assert recovered is True
    assert book.streams == {"u:42": Position("ab", 17)}  # 18 and 19 are replayed next
    for offset in (18, 19):
        assert book.accept(_note("u:42", "ab", offset))
    assert book.streams == {"u:42": Position("ab", 19)}


def test_a_changed_epoch_or_a_broken_resume_starts_over_at_the_servers_position() -> None:
    book = PositionBook({"u:42": Position("ab", 17), "all": Position("cd", 5)})
    recovered = book.welcomed(
        {
            **WELCOME,
            "recovered": False,
            "positions": {
                "u:42": {"epoch": "zz", "offset": 2},
                "all": {"epoch": "cd", "offset": 9},
            },
        }
    )
    assert recovered is False
    assert book.streams == {"u:42": Position("zz", 2), "all": Position("cd", 9)}


def test_streams_the_welcome_no_longer_lists_are_forgotten() -> None:
    book = PositionBook({"u:old": Position("ab", 1)})
    book.welcomed({**WELCOME, "positions": {"u:42": {"epoch": "ab", "offset": 0}}})
    assert set(book.streams) == {"u:42"}


def test_malformed_positions_are_ignored() -> None:
    book = PositionBook()
    book.welcomed(
        {
            **WELCOME,
            "positions": {
                "a": {"epoch": 1, "offset": 2},
                "b": {"epoch": "e", "offset": True},
                "c": "nope",
                "d": {"epoch": "e", "offset": 4},
            },
        }
    )
    assert book.streams == {"d": Position("e", 4)}


# --- positions: notifications and duplicates ------------------------------------------------


def _note(stream: str, epoch: str, offset: int, topic: str | None = None) -> dict[str, object]:
    frame: dict[str, object] = {
        "type": "notification",
        "id": f"{stream}-{offset}",
        "event": "e",
        "data": None,
        "ts": 1,
        "stream": stream,
        "epoch": epoch,
        "offset": offset,
    }
    if topic is not None:
        frame["topic"] = topic
    return frame


def test_a_notification_at_or_before_the_known_offset_is_a_duplicate() -> None:
    book = PositionBook({"u:42": Position("ab", 5)})
    assert not book.accept(_note("u:42", "ab", 4))
    assert not book.accept(_note("u:42", "ab", 5))
    assert book.accept(_note("u:42", "ab", 6))
    assert not book.accept(_note("u:42", "ab", 6))
    assert book.streams["u:42"] == Position("ab", 6)


def test_a_notification_of_a_new_epoch_is_accepted_and_restarts_the_stream() -> None:
    book = PositionBook({"u:42": Position("ab", 50)})
    assert book.accept(_note("u:42", "new", 1))
    assert book.streams["u:42"] == Position("new", 1)


@given(st.lists(st.integers(1, 30), max_size=60))
def test_whatever_the_replays_each_offset_is_delivered_once_in_increasing_order(
    arrivals: list[int],
) -> None:
    book = PositionBook()
    delivered = [n for n in arrivals if book.accept(_note("s", "e", n))]
    assert delivered == sorted(set(delivered))


# --- positions: topics ------------------------------------------------------------------------


def test_a_topic_position_comes_from_subscribed_and_its_notifications_and_goes_out_as_since() -> (
    None
):
    book = PositionBook()
    book.subscribed(
        "team:7", {"type": "subscribed", "topic": "team:7", "position": {"epoch": "t", "offset": 3}}
    )
    assert book.since("team:7") == Position("t", 3)
    assert book.accept(_note("topic-stream", "t", 4, topic="team:7"))
    assert book.since("team:7") == Position("t", 4)
    assert book.streams == {}  # topic streams are never part of resume
    # Subscribing again with since=4: recovered, the server replays 5.. next.
    assert book.subscribed(
        "team:7",
        {
            "type": "subscribed",
            "topic": "team:7",
            "recovered": True,
            "position": {"epoch": "t", "offset": 9},
        },
    )
    assert book.since("team:7") == Position("t", 4)
    book.forget_topic("team:7")
    assert book.since("team:7") is None


def test_a_broken_topic_resume_starts_at_the_servers_position() -> None:
    book = PositionBook()
    book.topics["team:7"] = Position("t", 4)
    recovered = book.subscribed(
        "team:7",
        {
            "type": "subscribed",
            "topic": "team:7",
            "recovered": False,
            "position": {"epoch": "u", "offset": 1},
        },
    )
    assert recovered is False
    assert book.since("team:7") == Position("u", 1)


# --- client settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        ("http://example.com/ws", {}),
        ("example.com/ws", {}),
        ("ws://example.com/ws", {"token": "t", "token_factory": object()}),
        ("ws://example.com/ws", {"refresh_at": 1.0}),
        ("ws://example.com/ws", {"refresh_at": 0}),
        ("ws://example.com/ws", {"max_buffer": 0}),
    ],
)
def test_settings_that_cannot_work_are_refused_when_the_client_is_made(
    url: str, kwargs: dict[str, object]
) -> None:
    with pytest.raises(ConfigurationError):
        NotifyClient(url, **kwargs)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_client_used_before_it_was_started_says_so_instead_of_waiting_forever() -> None:
    client = NotifyClient("ws://127.0.0.1:9/ws")
    with pytest.raises(RuntimeError, match="async with"):
        await client.subscribe("team:7")
    with pytest.raises(RuntimeError, match="async with"):
        await anext(client)
    with pytest.raises(RuntimeError, match="async with"):
        await client.wait_open()
