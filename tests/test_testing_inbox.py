"""notifykit.testing.inbox works as docs/testing.md says, and the doc's examples run."""

from __future__ import annotations

import ast
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from notifykit import Hub, PropagationError
from notifykit.memory import MemoryPropagator
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

        async def publish_soon() -> None:
            await anyio.sleep(0.05)
            await hub.notify_user("1", "later")

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(publish_soon)
            assert (await box.next()).event == "later"


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
