"""A real browser for the tests: Debian's Chromium driven by Playwright (sync API).

No browser is ever downloaded: Playwright launches ``/usr/bin/chromium`` (``apt-get install
chromium``; ``scripts/test`` installs it), headless, with a fresh profile per launch. A missing
browser fails the tests that need it, with the command that installs it. Screenshots go to
``test-artifacts/browser/`` at the top of the repository (gitignored).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright
from servers_e2e import API_KEY, Server

CHROMIUM = os.environ.get("NOTIFYKIT_TEST_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
TIMEOUT_MS = 15_000
"""How long any single browser wait may take before the test fails."""


@contextlib.contextmanager
def chromium() -> Iterator[BrowserContext]:
    """A headless Chromium with a fresh profile (Playwright's persistent context on a new
    ``--user-data-dir``); closed and its profile deleted afterwards."""
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(
            f"no Chromium at {CHROMIUM}: install it with `apt-get install -y chromium` "
            "(scripts/test does), or point NOTIFYKIT_TEST_CHROMIUM at one"
        )
    with (
        tempfile.TemporaryDirectory(prefix="notifykit-chromium-") as profile,
        sync_playwright() as playwright,
    ):
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=LAUNCH_ARGS,
            viewport={"width": 1280, "height": 860},
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module", name="browser")
def browser_fixture() -> Iterator[BrowserContext]:
    """``browser``: one Chromium per test module (import this into the module)."""
    with chromium() as context:
        yield context


@pytest.fixture(name="page_errors")
def page_errors_fixture() -> Iterator[list[str]]:
    """``page_errors``: uncaught errors of the pages a test opens (with :func:`new_page`);
    there must be none."""
    errors: list[str] = []
    yield errors
    assert errors == []


def new_page(context: BrowserContext, errors: list[str]) -> Page:
    """A new tab; uncaught page errors are appended to ``errors`` (tests assert none)."""
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page


def screenshot(page: Page, test: str, step: str) -> Path:
    """Save a screenshot of ``page`` as ``test-artifacts/browser/<test>-<step>.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{test}-{step}")
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), animations="disabled")
    return path


def publish(server: Server, body: dict[str, object]) -> str:
    """``POST /publish`` with the test API key (synchronously: browser tests use Playwright's
    sync API); returns the notification id."""
    response = httpx.post(
        f"{server.url}/publish", json=body, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status_code == 202, response.text
    notification_id: str = response.json()["id"]
    return notification_id
