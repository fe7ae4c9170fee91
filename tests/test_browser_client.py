"""The browser client (``/client.js``) in a real Chromium, against a real ``notifykit serve``.

Each test opens a page on the server's origin, imports ``/client.js`` as an application would,
and records in the page every state change (with ``performance.now()``), every notification
and what ``for await`` over the client yields. The Python side publishes over HTTP, stops and
restarts servers, and reads those records; every wait is a Playwright condition, bounded.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest
from browsers import (  # the fixtures browser and page_errors
    browser_fixture,  # noqa: F401
    new_page,
    page_errors_fixture,  # noqa: F401
    publish,
)
from playwright.sync_api import BrowserContext, Page
from servers_e2e import API_KEY, OTHER_SECRET, SECRET, Server, free_port, start_serve, token

from notifykit.client import Backoff

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(120)]

FLAGS = ("--jwt-secret", SECRET, "--api-key", API_KEY)
FAST = {"initial": 50, "maximum": 400}  # ms

START = """
async ({url, token, tokens, mint, backoff, topics}) => {
  const { NotifyClient } = await import("/client.js");
  Object.assign(window, { log: [], received: [], iterated: [], iterEnd: null, factoryCalls: 0 });
  const options = { topics: topics || [], backoff: backoff || undefined };
  if (token) options.token = token;
  if (tokens) options.tokenFactory = async () => {
    window.factoryCalls += 1;
    return tokens.length > 1 ? tokens.shift() : tokens[0];
  };
  if (mint) options.tokenFactory = async () => {
    window.factoryCalls += 1;
    return await window.mintToken();
  };
  const client = new NotifyClient(url, options);
  client.on("state", (change) => window.log.push(
    { ...change, error: change.error ? String(change.error) : null, t: performance.now() }));
  client.on("notification", (n) => window.received.push(n));
  (async () => {
    try {
      for await (const n of client) window.iterated.push(n.id);
      window.iterEnd = { done: true };
    } catch (error) {
      window.iterEnd = { name: error.name, code: error.code, reason: error.reason };
    }
  })();
  window.client = client;
}
"""


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = start_serve(*FLAGS)
    yield srv
    srv.stop()


@pytest.fixture
def page(browser: BrowserContext, server: Server, page_errors: list[str]) -> Iterator[Page]:
    """A tab on the server's origin (so it can import /client.js), closed after the test."""
    tab = new_page(browser, page_errors)
    tab.goto(server.url + "/healthz")
    yield tab
    tab.close()


def start(page: Page, url: str, **options: Any) -> None:
    """Start a NotifyClient in ``page`` (options: token, tokens, mint, backoff, topics)."""
    page.evaluate(START, {"url": url, **options})


def states(page: Page) -> list[str]:
    result: list[str] = page.evaluate("window.log.map((c) => c.state)")
    return result


def log(page: Page) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = page.evaluate("window.log")
    return result


def wait_until(page: Page, condition: str) -> None:
    """Wait until the JavaScript expression ``condition`` is truthy in ``page``."""
    page.wait_for_function(condition)


def wait_for_count(page: Page, state: str, count: int) -> None:
    wait_until(page, f"window.log.filter((c) => c.state === '{state}').length >= {count}")


def received_ids(page: Page) -> list[str]:
    result: list[str] = page.evaluate("window.received.map((n) => n.id)")
    return result


def wait_received(page: Page, notification_id: str) -> None:
    wait_until(page, f"window.received.some((n) => n.id === '{notification_id}')")


# --- receiving and topics -------------------------------------------------------------------


def test_it_receives_as_events_and_by_async_iteration_and_subscribes(
    server: Server, page: Page
) -> None:
    start(page, server.ws_url + "/ws", tokens=[token("alice", topics=["team:*"])])
    page.evaluate("window.client.waitOpen()")
    assert page.evaluate("window.client.user") == "alice"
    page.evaluate("window.client.subscribe('team:7')")
    assert page.evaluate("window.client.topics") == ["team:7"]

    to_alice = publish(server, {"event": "order.shipped", "data": {"n": 7}, "user": "alice"})
    to_topic = publish(server, {"event": "chat", "topic": "team:7"})
    wait_received(page, to_topic)
    assert received_ids(page) == [to_alice, to_topic]
    first = page.evaluate("window.received[0]")
    assert (first["event"], first["data"], first["type"]) == (
        "order.shipped",
        {"n": 7},
        "notification",
    )
    assert page.evaluate("window.iterated") == [to_alice, to_topic]


def test_a_refused_subscribe_rejects_with_the_servers_code_and_an_unsubscribe_stops_a_topic(
    server: Server, page: Page
) -> None:
    start(page, server.ws_url + "/ws", tokens=[token("bob", topics=["team:*"])])
    refused = page.evaluate(
        "window.client.subscribe('ops:1').then(() => null, (e) => ({name: e.name, code: e.code}))"
    )
    assert refused == {"name": "RequestRefused", "code": "forbidden"}
    page.evaluate("window.client.subscribe('team:1')")
    page.evaluate("window.client.unsubscribe('team:1')")
    assert page.evaluate("window.client.topics") == []
    publish(server, {"event": "chat", "topic": "team:1"})
    sentinel = publish(server, {"event": "sentinel", "broadcast": True})
    wait_received(page, sentinel)
    assert received_ids(page) == [sentinel]


# --- close codes ----------------------------------------------------------------------------


def test_after_4001_it_asks_the_factory_for_a_new_token(server: Server, page: Page) -> None:
    tokens = [token("carol", secret=OTHER_SECRET), token("carol")]
    start(page, server.ws_url + "/ws", tokens=tokens, backoff=FAST)
    wait_for_count(page, "open", 1)
    assert states(page) == ["connecting", "closed", "reconnecting", "connecting", "open"]
    closed = log(page)[1]
    assert (closed["code"], closed["reason"]) == (4001, "token signature is invalid")
    assert page.evaluate("window.factoryCalls") == 2


def test_after_4001_with_a_fixed_token_it_stops(server: Server, page: Page) -> None:
    start(page, server.ws_url + "/ws", token=token("dan", secret=OTHER_SECRET), backoff=FAST)
    wait_until(page, "window.iterEnd")
    assert states(page) == ["connecting", "closed", "stopped"]
    assert page.evaluate("window.iterEnd") == {
        "name": "ClientClosed",
        "code": 4001,
        "reason": "token signature is invalid",
    }


def test_4003_stops_it_without_a_retry(browser: BrowserContext, page_errors: list[str]) -> None:
    strict = start_serve(*FLAGS, "--allow-origin", "https://app.example")
    try:
        tab = new_page(browser, page_errors)  # its origin is http://127.0.0.1:<port>: refused
        tab.goto(strict.url + "/healthz")
        start(tab, strict.ws_url + "/ws", tokens=[token("eve")], backoff=FAST)
        wait_until(tab, "window.iterEnd")
        assert states(tab) == ["connecting", "closed", "stopped"]
        assert log(tab)[-1]["code"] == 4003
        assert tab.evaluate("window.iterEnd")["code"] == 4003
        assert tab.evaluate("window.factoryCalls") == 1
        rejected = tab.evaluate("window.client.waitOpen().then(() => 'open', (e) => e.name)")
        assert rejected == "ClientClosed"
        tab.close()
    finally:
        strict.stop()


def test_close_ends_with_stopped_and_ends_the_iteration(server: Server, page: Page) -> None:
    start(page, server.ws_url + "/ws", token=token("fay"))
    page.evaluate("window.client.waitOpen()")
    page.evaluate("window.client.close()")
    wait_until(page, "window.iterEnd")
    assert states(page) == ["connecting", "open", "closed", "stopped"]
    assert [(c["code"], c["reason"]) for c in log(page)[2:]] == [
        (1000, ""),
        (1000, "closed by the client"),
    ]
    assert page.evaluate("window.iterEnd") == {"done": True}


# --- tokens ---------------------------------------------------------------------------------


def test_it_refreshes_its_token_through_the_factory_before_it_expires(
    server: Server, page: Page
) -> None:
    page.expose_function("mintToken", lambda: token("gil", ttl=3))
    start(page, server.ws_url + "/ws", mint=True, backoff=FAST)
    page.evaluate("window.client.waitOpen()")
    connection = page.evaluate("window.client.connectionId")
    first_expiry = page.evaluate("window.client.expiresAt")
    # The second refresh starts a second or more after the first token expired.
    wait_until(page, "window.factoryCalls >= 3")
    assert page.evaluate("Date.now() / 1000") > first_expiry
    assert page.evaluate("window.client.expiresAt") > first_expiry
    assert page.evaluate("window.client.connectionId") == connection
    sent = publish(server, {"event": "still.here", "user": "gil"})
    wait_received(page, sent)
    assert "closed" not in states(page)


# --- restarts and outages -----------------------------------------------------------------


def test_it_reconnects_and_resubscribes_after_the_server_restarts(
    browser: BrowserContext, page_errors: list[str]
) -> None:
    first = start_serve(*FLAGS)
    second: Server | None = None
    try:
        tab = new_page(browser, page_errors)
        tab.goto(first.url + "/healthz")
        tokens = [token("hal", topics=["team:*"])]
        start(tab, first.ws_url + "/ws", tokens=tokens, topics=["team:1"], backoff=FAST)
        wait_for_count(tab, "open", 1)
        tab.evaluate("window.client.subscribe('team:2')")
        before = tab.evaluate("window.client.connectionId")
        first.stop(signal.SIGTERM)
        wait_for_count(tab, "closed", 1)
        assert log(tab)[states(tab).index("closed")]["code"] == 1001
        second = start_serve(*FLAGS, port=first.port)
        wait_for_count(tab, "open", 2)
        assert tab.evaluate("window.client.connectionId") != before
        assert sorted(tab.evaluate("window.client.topics")) == ["team:1", "team:2"]
        for topic in ("team:1", "team:2"):
            wait_received(tab, publish(second, {"event": "chat", "topic": topic}))
        tab.close()
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_while_the_server_is_down_it_backs_off_and_never_busy_spins(page: Page) -> None:
    backoff = {"initial": 100, "maximum": 400}
    start(page, f"ws://127.0.0.1:{free_port()}/ws", token=token("ida"), backoff=backoff)
    wait_for_count(page, "connecting", 7)
    changes = log(page)
    page.evaluate("window.client.close()")
    ceilings = Backoff(initial=100, maximum=400)  # the same formula, here in milliseconds
    waits = [c for c in changes if c["state"] == "reconnecting"][:6]
    for n, wait in enumerate(waits):
        assert wait["attempt"] == n + 1
        assert ceilings.ceiling(n) / 2 <= wait["delay"] <= ceilings.ceiling(n)
    connecting = [c["t"] for c in changes if c["state"] == "connecting"]
    # Seven attempts took at least the six waits between them (setTimeout rounds each delay
    # to whole milliseconds, hence 1 ms each): the client really waited.
    assert connecting[6] - connecting[0] >= sum(w["delay"] for w in waits) - len(waits)
    assert {c["code"] for c in changes if c["state"] == "closed"} == {1006}
