"""notifykit.testing.inbox works as docs/testing.md says, and the doc's examples run."""

from __future__ import annotations

import ast
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from notifykit import Hub, PropagationError
from notifykit.memory import MemoryPropagator
from notifykit.protocols import Deliver
from notifykit.testing import Inbox, inbox

pytestmark = pytest.mark.anyio

DOC = Path(__file__).resolve().parent.parent / "docs" / "testing.md"
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def doc_blocks() -> list[str]:
    return PYTHON_BLOCK.findall(DOC.read_text(encoding="utf-8"))


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    async with Hub() as running:
        yield running


# --- the documentation ------------------------------------------------------------------------


async def test_the_example_test_in_docs_testing_md_passes() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(doc_blocks()[0], str(DOC), "exec"), namespace)
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert len(tests) == 1
    await tests[0]()


async def test_the_more_patterns_example_in_docs_testing_md_passes() -> None:
    namespace: dict[str, Any] = {"Hub": Hub, "inbox": inbox}
    lines = doc_blocks()[1].splitlines()
    body = "async def example():\n" + "".join(f"    {line}\n" for line in lines)
    exec(compile(body, str(DOC), "exec"), namespace)
    await namespace["example"]()


async def test_the_several_instances_example_in_docs_testing_md_passes() -> None:
    namespace: dict[str, Any] = {"inbox": inbox}
    lines = doc_blocks()[2].splitlines()
    body = "async def example():\n" + "".join(f"    {line}\n" for line in lines)
    exec(compile(body, str(DOC), "exec"), namespace)
    await namespace["example"]()


async def test_the_injected_clock_example_in_docs_testing_md_passes() -> None:
    namespace: dict[str, Any] = {}
    (block,) = [block for block in doc_blocks() if "clock=lambda" in block]
    exec(compile(block, str(DOC), "exec"), namespace)
    await namespace["test_a_token_is_refused_once_its_exp_has_passed"]()


def test_every_notifykit_name_the_docs_import_exists() -> None:
    for block in doc_blocks():
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("notifykit"):
                module = __import__(node.module or "", fromlist=["_"])
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module}.{alias.name}"


# --- next() -----------------------------------------------------------------------------------


async def test_next_returns_notifications_one_at_a_time_in_order(hub: Hub) -> None:
    async with inbox(hub, "1") as box:
        first = await hub.notify_user("1", "first", {"n": 1})
        second = await hub.notify_user("1", "second")
        one, two = await box.next(), await box.next()
        assert (one.id, one.event, one.data) == (first, "first", {"n": 1})
        assert (two.id, two.event, two.data) == (second, "second", None)


async def test_next_waits_for_a_notification_published_later(hub: Hub) -> None:
    async with inbox(hub, "1") as box:
        received: list[str] = []

        async def read() -> None:
            received.append((await box.next()).event)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read)
            await anyio.wait_all_tasks_blocked()  # the reader is waiting inside next()
            assert received == []
            await hub.notify_user("1", "later")
        assert received == ["later"]


async def test_next_raises_timeout_error_when_nothing_arrives(hub: Hub) -> None:
    async with inbox(hub, "1") as box:
        with pytest.raises(TimeoutError, match="no notification"):
            await box.next(timeout=0.05)


async def test_next_does_not_return_what_it_already_returned(hub: Hub) -> None:
    async with inbox(hub, "1") as box:
        await hub.notify_user("1", "only")
        assert (await box.next()).event == "only"
        with pytest.raises(TimeoutError):
            await box.next(timeout=0.05)


# --- events, notifications ----------------------------------------------------------------------


async def test_events_and_notifications_show_everything_received_without_taking_it(
    hub: Hub,
) -> None:
    async with inbox(hub, "1") as box:
        assert box.events == []
        sent = [await hub.notify_user("1", f"e{n}") for n in range(3)]
        assert box.events == ["e0", "e1", "e2"]
        assert [n.id for n in box.notifications] == sent
        # Looking does not take: next() still starts at the first one.
        assert (await box.next()).event == "e0"
        assert box.events == ["e0", "e1", "e2"]


async def test_what_an_inbox_received_stays_readable_after_it_closed(hub: Hub) -> None:
    async with inbox(hub, "1") as box:
        await hub.notify_user("1", "kept")
    assert box.events == ["kept"]
    assert (await box.next()).event == "kept"
    with pytest.raises(TimeoutError, match="closed"):
        await box.next()
    assert hub.state.connection_count == 0


async def test_an_inbox_that_overflows_says_so(hub: Hub) -> None:
    async with inbox(hub, "1", queue_size=3) as box:
        for _ in range(4):
            await hub.notify_user("1", "e")
        with pytest.raises(AssertionError, match="overflowed"):
            _ = box.events


# --- assert_nothing ---------------------------------------------------------------------------


async def test_assert_nothing_passes_when_nothing_arrived(hub: Hub) -> None:
    async with inbox(hub, "1") as box:
        await hub.notify_user("2", "for someone else")
        await box.assert_nothing()


async def test_assert_nothing_raises_when_something_arrived(hub: Hub) -> None:
    async with inbox(hub, "1") as box:
        await hub.notify_user("1", "surprise")
        with pytest.raises(AssertionError, match="surprise"):
            await box.assert_nothing()


class LateOnSomeKeys(MemoryPropagator):
    """Delivers the payloads of some keys ``LATENCY`` seconds late, in order per key, as a
    remote backend does (on Redis Cluster each key has its own shard and connection)."""

    LATENCY = 0.06  # seconds: more than assert_nothing used to sleep instead of proving

    def __init__(self, tasks: TaskGroup, late: Callable[[str], bool]) -> None:
        super().__init__()
        self._tasks = tasks
        self._late = late
        self._lines: dict[str, MemoryObjectSendStream[bytes]] = {}

    async def start(self, deliver: Deliver) -> None:
        def deliver_in_order(key: str, payload: bytes) -> None:
            if not self._late(key):
                deliver(key, payload)
                return
            if key not in self._lines:
                self._lines[key], line = anyio.create_memory_object_stream[bytes](100)
                self._tasks.start_soon(self._carry, key, line, deliver)
            self._lines[key].send_nowait(payload)

        await super().start(deliver_in_order)

    async def _carry(
        self, key: str, line: MemoryObjectReceiveStream[bytes], deliver: Deliver
    ) -> None:
        async with line:
            async for payload in line:
                await anyio.sleep(self.LATENCY)  # the simulated network, not a synchronization
                deliver(key, payload)

    async def aclose(self) -> None:
        for line in self._lines.values():
            line.close()
        await super().aclose()


@asynccontextmanager
async def late_hub(late: Callable[[str], bool]) -> AsyncIterator[Hub]:
    """A running hub whose propagator delivers the keys ``late`` chooses late."""
    async with anyio.create_task_group() as tasks, Hub(LateOnSomeKeys(tasks, late)) as running:
        yield running


async def test_assert_nothing_catches_a_notification_still_on_its_way() -> None:
    async with late_hub(lambda key: True) as hub, inbox(hub, "1") as box:
        await hub.notify_user("1", "surprise")
        assert box.events == []  # not delivered yet
        with pytest.raises(AssertionError, match="surprise"):
            await box.assert_nothing()


async def test_assert_nothing_waits_for_every_key_the_inbox_listens_on() -> None:
    # Topics are late, the user's own key is not: a sentinel to the user alone would come back
    # before the topic notification does.
    async with (
        late_hub(lambda key: key.startswith("t:")) as hub,
        inbox(hub, "1", topics=["news"]) as box,
    ):
        await hub.notify_topic("news", "headline")
        with pytest.raises(AssertionError, match="headline"):
            await box.assert_nothing()


async def test_assert_nothing_passes_once_the_sentinels_are_back_on_a_late_propagator() -> None:
    async with (
        late_hub(lambda key: True) as hub,
        inbox(hub, "1", topics=["news"]) as box,
        inbox(hub, "2") as other,
    ):
        await hub.notify_user("2", "for someone else")
        await box.assert_nothing()
        assert (await other.next()).event == "for someone else"


async def test_assert_nothing_raises_timeout_error_when_its_sentinels_never_come_back() -> None:
    class DeliversNothing(MemoryPropagator):
        async def start(self, deliver: Deliver) -> None:
            await super().start(lambda key, payload: None)

    async with Hub(DeliversNothing()) as hub, inbox(hub, "1") as box:
        with pytest.raises(TimeoutError, match=r"did not come back within 0\.05 s"):
            await box.assert_nothing(timeout=0.05)


async def test_sentinels_reach_no_inbox(hub: Hub) -> None:
    async with (
        inbox(hub, "1", topics=["news"]) as tab1,
        inbox(hub, "1", topics=["news"]) as tab2,
        inbox(hub, None) as visitor,
    ):
        await tab1.assert_nothing()
        await visitor.assert_nothing()
        assert (tab1.events, tab2.events, visitor.events) == ([], [], [])
        # tab1: everyone, user 1, authenticated, topic news; the anonymous visitor: everyone
        assert hub.propagator.statistics()["published"] == 5
        await hub.notify_user("1", "real")
        assert tab2.events == ["real"]


async def test_a_closed_inbox_is_checked_without_a_round_trip(hub: Hub) -> None:
    async with inbox(hub, "1") as box:
        pass
    published = hub.propagator.statistics()["published"]
    await box.assert_nothing()
    assert hub.propagator.statistics()["published"] == published


async def test_assert_nothing_ignores_what_next_already_returned(hub: Hub) -> None:
    async with inbox(hub, "1") as box:
        await hub.notify_user("1", "expected")
        await box.next()
        await box.assert_nothing()
        await hub.notify_user("1", "unexpected")
        with pytest.raises(AssertionError, match="unexpected"):
            await box.assert_nothing()


# --- registration ---------------------------------------------------------------------------------


async def test_topics_given_at_creation_are_subscribed(hub: Hub) -> None:
    async with inbox(hub, "1", topics=["news", "doc:7"]) as box:
        await hub.notify_topic("news", "headline")
        await hub.notify_topic("doc:7", "edited")
        await hub.notify_topic("sport", "not subscribed")
        assert [(n.event, n.topic) for n in box.notifications] == [
            ("headline", "news"),
            ("edited", "doc:7"),
        ]


async def test_an_anonymous_inbox_receives_broadcasts_only(hub: Hub) -> None:
    async with inbox(hub, None, topics=["news"]) as anonymous:
        await hub.notify_authenticated("members only")
        await hub.broadcast("everyone")
        await hub.notify_topic("news", "topic")
        assert anonymous.events == ["everyone", "topic"]
        assert hub.state.user_count == 0


async def test_an_inbox_is_registered_like_a_connection_and_unregistered_on_exit(
    hub: Hub,
) -> None:
    async with inbox(hub, "1", topics=["news"]) as box:
        assert isinstance(box, Inbox)
        assert [c.id for c in hub.local_connections("1")] == [box.connection_id]
        assert (hub.state.connection_count, hub.state.user_count) == (1, 1)
    assert list(hub.state.keys()) == []
    assert hub.propagator.statistics()["subscriptions"] == 0


async def test_an_inbox_whose_registration_fails_leaves_nothing_behind() -> None:
    class Unreachable(MemoryPropagator):
        async def subscribe(self, keys: object) -> None:
            raise PropagationError("backend unreachable")

    async with Hub(Unreachable()) as hub:
        with pytest.raises(PropagationError):
            async with inbox(hub, "1"):
                pass  # pragma: no cover
        assert list(hub.state.keys()) == []


async def test_claims_reach_the_simulated_principal(hub: Hub) -> None:
    async with inbox(hub, "1", claims={"role": "admin"}) as box:
        assert box.connection.principal.claims == {"role": "admin"}
