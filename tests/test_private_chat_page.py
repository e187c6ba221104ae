"""The private chat tutorial's page (docs/examples/private/page.html), in a browser.

Two people log in on the page served by the app's ``/`` route and talk in their conversation;
the third's page is refused it. Skipped without Chromium, like the demo's browser tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from docs.examples.private.private_chat import PAGE, app
from tests import test_demo_browser
from tests.live import live_server

with contextlib.suppress(ImportError):  # the browser fixture skips, or fails if required
    from playwright.async_api import Browser, Page, expect

browser = test_demo_browser.browser  # Chromium, driven by Playwright

TIMEOUT_MS = 10_000


@pytest.fixture
async def base() -> AsyncIterator[str]:
    async with live_server(app) as address:
        yield f"http://{address}"


async def test_the_page_is_served_at_the_root(base: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{base}/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == PAGE.read_text()


async def open_as(browser: Browser, base: str, name: str, password: str, other: str) -> Page:
    page = await (await browser.new_context()).new_page()
    await page.goto(f"{base}/")
    await page.fill("input[name=username]", name)
    await page.fill("input[name=password]", password)
    await page.fill("input[name=other]", other)
    await page.click("#login button")
    return page


async def test_two_people_talk_on_the_page(browser: Browser, base: str) -> None:
    ann = await open_as(browser, base, "ann", "correct horse", "bob")
    bob = await open_as(browser, base, "bob", "battery staple", "ann")
    for page in (ann, bob):
        await expect(page.locator("#say")).to_be_visible(timeout=TIMEOUT_MS)
    await ann.fill("#say input[name=text]", "hello Bob")
    await ann.click("#say button")
    for page in (ann, bob):
        lines = page.locator("#lines li", has_text="ann: hello Bob")
        await expect(lines).to_have_count(1, timeout=TIMEOUT_MS)
    await expect(bob.locator("#lines li", has_text="(a message from ann)")).to_have_count(
        1, timeout=TIMEOUT_MS
    )
