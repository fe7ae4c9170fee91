"""The demo page (``notifykit serve --demo``, ``/demo``) in a real Chromium, two users at once.

Each page signs in as its own user through the page's form and sends through the page's form,
exactly as a person would. Absence is proven with a broadcast sentinel: a page's inbox lists
notifications newest first, in delivery order, so once the sentinel is there, whatever should
have come before it has. Screenshots are saved under ``test-artifacts/browser/``.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator

import pytest
from browsers import (  # the fixtures browser and page_errors
    browser_fixture,  # noqa: F401
    new_page,
    page_errors_fixture,  # noqa: F401
    publish,
    screenshot,
)
from playwright.sync_api import BrowserContext, Page, expect
from servers import RedisServer
from servers_e2e import API_KEY, SECRET, Server, log_on_failure, start_serve

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(180)]

STATE = '[data-testid="state"]'
INBOX_ITEMS = '[data-testid="inbox-item"]'


def demo_flags(*extra: str) -> list[str]:
    return ["--demo", "--jwt-secret", SECRET, "--api-key", API_KEY, *extra]


@pytest.fixture(scope="module")
def demo() -> Iterator[Server]:
    server = start_serve(*demo_flags())
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _demo_log(request: pytest.FixtureRequest, demo: Server) -> Iterator[None]:
    with log_on_failure(request, demo):
        yield


@pytest.fixture
def pages(browser: BrowserContext) -> Iterator[list[Page]]:
    """The pages a test opens, closed after it."""
    opened: list[Page] = []
    yield opened
    for page in opened:
        page.close()


SignIn = Callable[[Server, str], Page]


@pytest.fixture
def sign_in(browser: BrowserContext, pages: list[Page], page_errors: list[str]) -> SignIn:
    """``sign_in(server, user)``: open the demo in a new tab and sign in as ``user``; returns
    the page once it is live."""

    def open_demo(server: Server, user: str) -> Page:
        page = new_page(browser, page_errors)
        pages.append(page)
        return _sign_in(page, server, user)

    return open_demo


def _sign_in(page: Page, server: Server, user: str) -> Page:
    page.goto(server.url + "/demo")
    page.fill('[data-testid="user-input"]', user)
    page.press('[data-testid="user-input"]', "Enter")
    expect(page.locator('[data-testid="user"]')).to_have_text(user)
    expect(page.locator(STATE)).to_have_attribute("data-state", "open")
    return page


def send_from(page: Page, target: str, recipient: str, title: str, text: str) -> None:
    """Fill and submit the page's send form (``target``: user, topic or everyone)."""
    page.click(f'.segmented label:has(input[value="{target}"])')
    if target != "everyone":
        page.fill('[data-testid="recipient"]', recipient)
    page.fill('[data-testid="title"]', title)
    page.fill('[data-testid="message"]', text)
    page.click('[data-testid="send"]')
    expect(page.locator('[data-testid="send-result"]')).to_contain_text("Sent")


def subscribe_on(page: Page, topic: str) -> None:
    page.fill('[data-testid="topic-input"]', topic)
    page.click('[data-testid="subscribe"]')
    expect(page.locator(f'.chip[data-topic="{topic}"]')).to_be_visible()


def sentinel_is_all_it_got(server: Server, page: Page) -> None:
    """Broadcast a sentinel: it must be the only notification in ``page``'s inbox."""
    sentinel = publish(server, {"event": "sentinel", "broadcast": True})
    expect(page.locator(f'{INBOX_ITEMS}[data-id="{sentinel}"]')).to_be_visible()
    expect(page.locator(INBOX_ITEMS)).to_have_count(1)


def toast_titled(page: Page, title: str) -> None:
    expect(page.locator('[data-testid="toast"]', has_text=title)).to_be_visible()


# --- two users ----------------------------------------------------------------------------


def test_a_notification_sent_to_one_user_appears_only_on_their_page(
    request: pytest.FixtureRequest,
    demo: Server,
    sign_in: SignIn,
) -> None:
    alice = sign_in(demo, "alice")
    bob = sign_in(demo, "bob")
    screenshot(alice, request.node.name, "1-signed-in")

    send_from(bob, "user", "alice", "Order shipped", "Your order #1042 is on its way.")
    toast_titled(alice, "Order shipped")
    item = alice.locator(INBOX_ITEMS).first
    expect(item).to_contain_text("Your order #1042 is on its way.")
    expect(item).to_contain_text("to you · from bob")
    screenshot(alice, request.node.name, "2-alice-received")

    sentinel_is_all_it_got(demo, bob)
    screenshot(bob, request.node.name, "3-bob-did-not")


def test_a_topic_notification_reaches_only_the_page_subscribed_to_it(
    request: pytest.FixtureRequest,
    demo: Server,
    sign_in: SignIn,
) -> None:
    alice = sign_in(demo, "alice")
    bob = sign_in(demo, "bob")
    subscribe_on(alice, "team:design")

    send_from(bob, "topic", "team:design", "Design review at 3pm", "Bring feedback.")
    toast_titled(alice, "Design review at 3pm")
    expect(alice.locator(INBOX_ITEMS).first).to_contain_text("#team:design · from bob")
    screenshot(alice, request.node.name, "alice-subscribed")

    sentinel_is_all_it_got(demo, bob)


def test_everyone_means_every_page(
    request: pytest.FixtureRequest,
    demo: Server,
    sign_in: SignIn,
) -> None:
    alice = sign_in(demo, "alice")
    bob = sign_in(demo, "bob")
    send_from(bob, "everyone", "", "Maintenance tonight", "Restart at 22:00 UTC.")
    for page in (alice, bob):
        toast_titled(page, "Maintenance tonight")
        expect(page.locator(INBOX_ITEMS).first).to_contain_text("to everyone · from bob")
    screenshot(bob, request.node.name, "bob")


def test_a_refused_topic_is_explained_on_the_page(demo: Server, sign_in: SignIn) -> None:
    alice = sign_in(demo, "alice")
    alice.fill('[data-testid="topic-input"]', "not a topic")
    alice.click('[data-testid="subscribe"]')
    expect(alice.locator('[data-testid="topic-error"]')).to_contain_text("Cannot subscribe")
    expect(alice.locator(".chip")).to_have_count(0)


def test_signing_out_closes_the_connection(demo: Server, sign_in: SignIn) -> None:
    alice = sign_in(demo, "alice")
    alice.click('[data-action="sign-out"]')
    expect(alice.locator(STATE)).to_have_attribute("data-state", "stopped")
    expect(alice.locator(STATE)).to_have_text("Signed out")
    expect(alice.locator('[data-testid="user-input"]')).to_be_visible()


# --- restarts -----------------------------------------------------------------------------


def test_after_a_server_restart_the_page_reconnects_by_itself(
    request: pytest.FixtureRequest, sign_in: SignIn
) -> None:
    server = start_serve(*demo_flags())
    try:
        alice = sign_in(server, "alice")
        subscribe_on(alice, "team:ops")
        server.stop(signal.SIGTERM)
        expect(alice.locator(STATE)).not_to_have_attribute("data-state", "open")
        expect(alice.locator(STATE)).to_contain_text("Reconnecting")
        screenshot(alice, request.node.name, "1-reconnecting")

        server = start_serve(*demo_flags(), port=server.port)
        with log_on_failure(request, server):
            expect(alice.locator(STATE)).to_have_attribute("data-state", "open")
            # An in-memory server lost its history: the page says what it cannot recover.
            toast_titled(alice, "Back online")
            assert alice.evaluate("window.notifykitDemo.client.lastChange.recovered") is False
            publish(
                server, {"event": "demo.message", "data": {"title": "Hello again"}, "user": "alice"}
            )
            toast_titled(alice, "Hello again")
            publish(
                server, {"event": "demo.message", "data": {"title": "Ops"}, "topic": "team:ops"}
            )
            toast_titled(alice, "Ops")  # subscribed again by itself
            screenshot(alice, request.node.name, "2-reconnected")
    finally:
        server.stop()


@pytest.mark.redis
def test_a_page_reconnects_after_its_server_restarts_and_resumes_what_it_missed(
    request: pytest.FixtureRequest, sign_in: SignIn, redis_server: RedisServer
) -> None:
    """Two instances on one Redis: alice's instance goes down, bob's sends her a notification,
    hers comes back. Once the server numbers its streams (welcome ``positions``), the page
    resumes and shows what was sent meanwhile; until then it reconnects and goes on live."""
    flags = demo_flags("--redis-url", redis_server.url)
    hers, bobs = start_serve(*flags), start_serve(*flags)
    try:
        alice = sign_in(hers, "alice")
        bob = sign_in(bobs, "bob")
        resumes = bool(alice.evaluate("Object.keys(window.notifykitDemo.client.positions).length"))

        hers.stop(signal.SIGTERM)
        expect(alice.locator(STATE)).not_to_have_attribute("data-state", "open")
        send_from(bob, "user", "alice", "Sent while you were away", "Missed nothing.")
        screenshot(alice, request.node.name, "1-down")

        hers = start_serve(*flags, port=hers.port)
        with log_on_failure(request, hers, bobs):
            expect(alice.locator(STATE)).to_have_attribute("data-state", "open")
            if resumes:
                toast_titled(alice, "Sent while you were away")
                assert alice.evaluate("window.notifykitDemo.client.lastChange.recovered") is True
            send_from(bob, "user", "alice", "Live again", "After the restart.")
            toast_titled(alice, "Live again")
            screenshot(alice, request.node.name, "2-back")
    finally:
        hers.stop()
        bobs.stop()
