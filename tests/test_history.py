"""Per-stream history in memory, and the catch-up that turns a read of it into what a joining
connection receives (notifykit.recovery): offsets without holes, epochs that change whenever
history is lost, every bound, and exactly-once delivery across the join."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from notifykit.envelope import stamp, unstamp
from notifykit.errors import ConfigurationError
from notifykit.memory import MemoryHistory
from notifykit.model import StreamHistory
from notifykit.recovery import Held, catch_up
from notifykit.wire import Position


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def offsets(stream: StreamHistory) -> list[int]:
    return [offset for offset, _ in stream.entries]


def payloads(stream: StreamHistory) -> list[bytes]:
    return [unstamp(payload)[1] for _, payload in stream.entries]


# --- MemoryHistory --------------------------------------------------------------------------


def test_offsets_count_from_one_without_holes_and_the_stamp_says_where() -> None:
    history = MemoryHistory()
    stamped = [history.append("u:1", f"\nn{n}".encode()) for n in range(5)]
    places = [unstamp(s)[0] for s in stamped]
    epoch = places[0].epoch  # type: ignore[union-attr]
    assert places == [Position(epoch, n) for n in range(1, 6)]
    stream = history.read("u:1", 0, 100)
    assert (stream.epoch, stream.first, stream.last) == (epoch, 1, 5)
    assert offsets(stream) == [1, 2, 3, 4, 5]
    assert [payload for _, payload in stream.entries] == stamped


def test_each_stream_has_its_own_offsets_and_epoch() -> None:
    history = MemoryHistory()
    history.append("u:1", b"\na")
    history.append("u:1", b"\nb")
    history.append("u:2", b"\nc")
    one, two = history.read("u:1", None, 0), history.read("u:2", None, 0)
    assert (one.last, two.last) == (2, 1)
    assert one.epoch != two.epoch


def test_reading_a_stream_that_never_had_an_entry_gives_it_an_epoch_that_lasts() -> None:
    history = MemoryHistory()
    empty = history.read("u:1", None, 0)
    assert (empty.last, empty.first, empty.entries) == (0, 1, ())
    history.append("u:1", b"\nfirst")
    after = history.read("u:1", 0, 10)
    assert after.epoch == empty.epoch
    assert after.continues(empty.position)
    assert payloads(after) == [b"\nfirst"]


def test_read_returns_only_entries_after_the_offset_and_at_most_limit() -> None:
    history = MemoryHistory()
    for n in range(10):
        history.append("t:x", f"\n{n}".encode())
    assert offsets(history.read("t:x", 6, 100)) == [7, 8, 9, 10]
    limited = history.read("t:x", 2, 3)
    assert offsets(limited) == [3, 4, 5]
    assert not limited.complete
    assert history.read("t:x", 7, 3).complete
    assert history.read("t:x", 10, 3).entries == ()
    assert history.read("t:x", None, 100).entries == ()


def test_size_bounds_each_stream_and_the_first_retained_offset_moves() -> None:
    history = MemoryHistory(size=3)
    for n in range(10):
        history.append("u:1", f"\n{n}".encode())
    stream = history.read("u:1", 0, 100)
    assert (stream.first, stream.last) == (8, 10)
    assert offsets(stream) == [8, 9, 10]
    assert not stream.continues(Position(stream.epoch, 6))  # 7 is gone
    assert stream.continues(Position(stream.epoch, 7))
    assert stream.continues(Position(stream.epoch, 10))


def test_entries_older_than_the_ttl_are_not_kept() -> None:
    clock = Clock()
    history = MemoryHistory(ttl=60, clock=clock)
    history.append("u:1", b"\nold")
    clock.now += 50
    history.append("u:1", b"\nnew")
    clock.now += 20  # the first entry is 70 s old now, the second 20 s
    stream = history.read("u:1", 0, 100)
    assert (stream.first, stream.last) == (2, 2)
    assert payloads(stream) == [b"\nnew"]


def test_a_stream_idle_beyond_the_ttl_starts_again_with_a_new_epoch() -> None:
    clock = Clock()
    history = MemoryHistory(ttl=60, clock=clock)
    history.append("u:1", b"\na")
    before = history.read("u:1", None, 0)
    clock.now += 61
    after = history.read("u:1", 0, 10)
    assert after.epoch != before.epoch
    assert after.last == 0
    assert not after.continues(before.position)


def test_beyond_max_streams_the_least_recently_used_is_forgotten_and_comes_back_new() -> None:
    history = MemoryHistory(max_streams=2)
    history.append("u:1", b"\na")
    first = history.read("u:1", None, 0)
    history.append("u:2", b"\nb")
    history.append("u:3", b"\nc")  # u:1 is the least recently used
    assert history.statistics()["streams"] == 2
    assert history.statistics()["evicted"] == 1
    again = history.read("u:1", 0, 10)
    assert again.epoch != first.epoch
    assert not again.continues(first.position)


def test_max_bytes_bounds_all_streams_together() -> None:
    history = MemoryHistory(max_bytes=10_000)
    for n in range(100):
        history.append(f"u:{n}", b"\n" + b"x" * 500)
    stats = history.statistics()
    assert stats["bytes"] <= 10_000
    assert stats["streams"] < 100
    assert stats["entries"] == stats["streams"]


@pytest.mark.parametrize(
    "options",
    [{"size": 0}, {"size": -1}, {"ttl": 0}, {"ttl": float("nan")}, {"max_streams": 0}],
)
def test_settings_that_cannot_work_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        MemoryHistory(**options)  # type: ignore[arg-type]


# --- catch_up ---------------------------------------------------------------------------------


EPOCH = "ep0"


def stream(last: int, first: int = 1, entries: Iterable[int] = ()) -> StreamHistory:
    return StreamHistory(
        EPOCH,
        last,
        first,
        tuple((o, stamp(f"\nentry {o}".encode(), Position(EPOCH, o))) for o in entries),
    )


def held(*offsets: int, epoch: str = EPOCH) -> Held:
    waiting = Held(100)
    waiting.extend((Position(epoch, o), f"live {o}") for o in offsets)
    return waiting


def frame_of(key: str, payload: bytes) -> str:
    _, rest = unstamp(payload)
    return rest.decode()[1:]  # "entry N"


def test_a_new_connection_is_told_the_last_offset_and_gets_what_arrives_after_it() -> None:
    registration = catch_up(["u:1"], {"u:1": stream(5)}, None, {"u:1": held(6, 7)}, frame_of)
    assert registration.positions == {"u:1": Position(EPOCH, 5)}
    assert registration.recovered is None
    assert registration.frames == ["live 6", "live 7"]


def test_what_arrived_live_before_the_read_is_delivered_and_the_position_precedes_it() -> None:
    # Published after the subscription took effect, so they arrived live, but before the read.
    registration = catch_up(["u:1"], {"u:1": stream(5)}, None, {"u:1": held(4, 5, 6)}, frame_of)
    assert registration.positions == {"u:1": Position(EPOCH, 3)}
    assert registration.frames == ["live 4", "live 5", "live 6"]


def test_a_resume_replays_what_was_missed_then_what_arrived_after_the_read_once_each() -> None:
    registration = catch_up(
        ["u:1"],
        {"u:1": stream(6, entries=range(1, 7))},
        {"u:1": Position(EPOCH, 3)},
        {"u:1": held(5, 6, 7, 8)},  # 5 and 6 arrived live and are in the history too
        frame_of,
    )
    assert registration.recovered is True
    assert registration.positions == {"u:1": Position(EPOCH, 6)}
    assert registration.frames == ["entry 4", "entry 5", "entry 6", "live 7", "live 8"]


@pytest.mark.parametrize(
    ("position", "why"),
    [
        pytest.param(Position("other", 3), "another epoch", id="epoch"),
        pytest.param(Position(EPOCH, 1), "2 is no longer retained", id="retention"),
        pytest.param(Position(EPOCH, 9), "ahead of the stream", id="ahead"),
    ],
)
def test_a_resume_that_cannot_continue_replays_nothing_and_says_so(
    position: Position, why: str
) -> None:
    registration = catch_up(
        ["u:1"],
        {"u:1": stream(6, first=3, entries=range(3, 7))},
        {"u:1": position},
        {"u:1": held(7)},
        frame_of,
    )
    assert registration.recovered is False, why
    assert registration.positions == {"u:1": Position(EPOCH, 6)}
    assert registration.frames == ["live 7"]


def test_resume_ignores_streams_the_connection_does_not_receive() -> None:
    registration = catch_up(
        ["u:1"],
        {"u:1": stream(2, entries=[1, 2])},
        {"u:1": Position(EPOCH, 2), "u:2": Position(EPOCH, 0), "t:secret": Position(EPOCH, 0)},
        {},
        frame_of,
    )
    assert registration.recovered is True
    assert registration.frames == []
    assert set(registration.positions) == {"u:1"}


def test_without_history_a_resume_is_not_recovered_and_what_arrives_is_delivered() -> None:
    waiting = Held(10)
    waiting.append((None, "live"))
    registration = catch_up(["u:1"], {}, {"u:1": Position(EPOCH, 2)}, {"u:1": waiting}, frame_of)
    assert registration.recovered is False
    assert registration.positions == {}
    assert registration.frames == ["live"]


def test_one_broken_stream_makes_the_whole_resume_unrecovered_but_the_others_still_replay() -> None:
    registration = catch_up(
        ["u:1", "all"],
        {"u:1": stream(2, entries=[1, 2]), "all": stream(1, entries=[1])},
        {"u:1": Position(EPOCH, 1), "all": Position("lost", 1)},
        {},
        frame_of,
    )
    assert registration.recovered is False
    assert registration.frames == ["entry 2"]
