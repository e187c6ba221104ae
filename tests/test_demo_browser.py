"""The demo chat in a real browser: headless Chromium, driven by Playwright, used like a person.

The browser is the system's Chromium (Debian's ``chromium`` package); no browser is ever
downloaded. Without one these tests are skipped with the reason, or fail when
``FASTAPI_CHANNELS_REQUIRE_BROWSER=1`` (as in CI). Screenshots land in ``test-artifacts/demo/``.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from demo.app import app
from tests.live import live_server
from tests.processes import start_process
from tests.proxy import tcp_proxy

try:
    from playwright.async_api import Browser, Locator, Page, async_playwright, expect
except ImportError:  # the browser fixture skips, or fails where a browser is required
    async_playwright = None

REQUIRE_ENV = "FASTAPI_CHANNELS_REQUIRE_BROWSER"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "demo"
WAIT = 5_000
"""ms: how long any one thing a person would see may take to appear."""
NETWORK_FAILURE = "Failed to load resource: net::ERR_"
"""How Chromium logs a request the network failed (not an HTTP error status)."""
DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}}
PHONE: dict[str, Any] = {
    "viewport": {"width": 375, "height": 740},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}


def browser_unavailable(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"a browser is required ({REQUIRE_ENV}=1) but {reason}", pytrace=False)
    pytest.skip(f"needs a browser: {reason}")


# --8<-- [start:browser]
@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        browser_unavailable("no chromium binary on PATH (apt-get install chromium)")
    if async_playwright is None:
        browser_unavailable(
            "playwright is not installed (pip install 'fastapi-ws-channels[browser]')"
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable)
        try:
            yield launched
        finally:
            await launched.close()


# --8<-- [end:browser]


class Person:
    """One browser context (its own storage, as a separate browser would have) on the demo."""

    def __init__(self, name: str, page: Page) -> None:
        self.name = name
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on(
            "console",
            lambda message: (
                self.errors.append(f"{message.text} <{message.location.get('url', '')}>")
                if message.type == "error"
                else None
            ),
        )

    def errors_besides_network_failures(self) -> list[str]:
        """What the page logged as errors, less requests the network cut (while it was down)."""
        return [e for e in self.errors if not e.startswith(NETWORK_FAILURE)]

    @classmethod
    async def open(cls, browser: Browser, base: str, name: str, device: dict[str, Any]) -> Person:
        context = await browser.new_context(base_url=base, **device)
        context.set_default_timeout(WAIT)
        person = cls(name, await context.new_page())
        await person.page.goto("/")
        return person

    async def log_in(self) -> None:
        page = self.page
        await expect(page.get_by_text("Demo login, no password.")).to_be_visible()
        await page.get_by_label("Your name").fill(self.name)
        await page.get_by_role("button", name="Log in").click()
        await expect(page.get_by_role("status")).to_have_text("connected")
        await expect(page.get_by_text(f"Signed in as {self.name}")).to_be_visible()
        await expect(page.get_by_text(f"You are {self.name}. Say hello!")).to_be_visible()

    def conversations(self) -> Locator:
        return self.page.get_by_role("navigation", name="Conversations")

    def room(self) -> Locator:
        return self.page.get_by_role("log", name="Messages in global-chat", include_hidden=True)

    def chat_with(self, name: str) -> Locator:
        return self.page.get_by_role("log", name=f"Messages with {name}", include_hidden=True)

    def entry(self, conversation: str) -> Locator:
        """The list entry of a conversation; its name also tells unread messages and typing."""
        name = re.compile(rf"^{re.escape(conversation)}(,|$)")
        return self.conversations().get_by_role("button", name=name)

    async def open_chat(self, conversation: str) -> None:
        await self.entry(conversation).click()

    async def type(self, text: str) -> None:
        await self.page.get_by_label("Message", exact=True).press_sequentially(text)

    async def send(self, text: str) -> None:
        box = self.page.get_by_label("Message", exact=True)
        await box.fill(text)
        await box.press("Enter")

    async def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


async def test_two_people_chat_in_the_room_and_in_private_and_a_third_sees_no_secret(
    browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin_token = secrets.token_urlsafe(16)
    monkeypatch.setenv("DEMO_ADMIN_TOKEN", admin_token)
    async with asyncio.timeout(60), live_server(app) as address:
        base = f"http://{address}"
        alice, bob, carol = await asyncio.gather(
            Person.open(browser, base, "alice", DESKTOP),
            Person.open(browser, base, "bob", PHONE),
            Person.open(browser, base, "carol", DESKTOP),
        )
        await alice.screenshot("1-login-desktop")
        await bob.screenshot("1-login-phone")
        await carol.page.get_by_label("Your name").fill("carol!")
        await carol.page.get_by_role("button", name="Log in").click()
        await expect(carol.page.get_by_role("alert")).to_contain_text("lower-case letters")
        carol.errors.clear()  # the browser logs the refused request (422) as an error
        await asyncio.gather(alice.log_in(), bob.log_in(), carol.log_in())

        # Who is online shows before anyone says a word.
        for name in ("bob", "carol"):
            await expect(alice.entry(name)).to_have_accessible_name(f"{name}, online")
        await expect(alice.page.get_by_text("· 3 online")).to_be_visible()

        # The room: everyone sees everyone; typing shows to the others while it lasts.
        await alice.send("hello everyone")
        for person in (alice, bob, carol):
            await expect(person.room()).to_contain_text("hello everyone")
        await bob.type("hi al")
        await expect(alice.page.get_by_text("bob is typing…")).to_be_visible()
        await expect(carol.page.get_by_text("bob is typing…")).to_be_visible()
        await alice.screenshot("2-typing-desktop")
        await bob.send("hi alice!")
        await expect(alice.room()).to_contain_text("hi alice!")
        await expect(alice.page.get_by_text("bob is typing…")).to_be_hidden()

        # Private: alice writes to bob; bob is told while he is in the room.
        await alice.open_chat("bob")
        await expect(
            alice.page.get_by_role("heading", name="Private chat with bob")
        ).to_be_visible()
        await alice.type("the cake is in")
        bob_sees_alice = bob.entry("alice")
        await expect(bob_sees_alice).to_have_accessible_name("alice, online, typing")
        await alice.send("the cake is in the fridge")
        await expect(alice.chat_with("bob")).to_contain_text("the cake is in the fridge")
        await expect(bob_sees_alice).to_have_accessible_name("alice, online, 1 unread")
        await bob.screenshot("2-unread-phone")
        await bob.open_chat("alice")
        await expect(bob.chat_with("alice")).to_contain_text("the cake is in the fridge")
        await bob.type("tha")
        await expect(alice.page.get_by_text("bob is typing…")).to_be_visible()
        await bob.send("thanks!")
        await expect(alice.chat_with("bob")).to_contain_text("thanks!")

        # An announcement from HTTP reaches everyone's room.
        async with httpx.AsyncClient(base_url=base) as http:
            headers = {"Authorization": f"Bearer {admin_token}"}
            response = await http.post("/announce", json={"text": "tea at four"}, headers=headers)
            assert response.status_code == 204
        for person in (alice, bob, carol):
            await expect(person.room()).to_contain_text("tea at four")

        # carol got everything said in the room after the private messages, and none of them.
        await alice.open_chat("# global-chat")
        await alice.send("bye for now")
        await expect(carol.room()).to_contain_text("bye for now")
        for secret in ("cake", "thanks!"):
            await expect(carol.page.locator("body")).not_to_contain_text(secret)
            assert secret not in await carol.page.content()

        await alice.screenshot("3-private-desktop")
        await bob.screenshot("3-private-phone")
        await carol.screenshot("3-room-desktop")
        await alice.page.set_viewport_size(PHONE["viewport"])
        await alice.screenshot("4-room-narrow")
        for person in (alice, bob, carol):
            assert person.errors == [], person.name

        # carol closes her browser: the others see her go.
        await carol.page.context.close()
        await expect(alice.entry("carol")).to_have_accessible_name("carol, offline")
        await expect(bob.entry("carol")).to_have_accessible_name("carol, offline")


async def test_a_lost_connection_shows_comes_back_and_catches_up(
    browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The badge follows the connection; after a reconnect the page gets what it missed."""
    admin = {"Authorization": f"Bearer {secrets.token_urlsafe(16)}"}
    monkeypatch.setenv("DEMO_ADMIN_TOKEN", admin["Authorization"].split()[1])
    async with asyncio.timeout(60), live_server(app) as address:
        port = int(address.rsplit(":", 1)[1])
        async with tcp_proxy(port) as network:
            alice = await Person.open(browser, f"http://127.0.0.1:{network.port}", "alice", PHONE)
            bob = await Person.open(browser, f"http://{address}", "bob", DESKTOP)
            await asyncio.gather(alice.log_in(), bob.log_in())
            status = alice.page.get_by_role("status")

            network.down = True
            network.drop()
            await expect(status).to_have_text(re.compile(r"^reconnecting in \d+ s$"))
            await expect(alice.page.get_by_role("button", name="Send")).to_be_disabled()
            await expect(bob.entry("alice")).to_have_accessible_name("alice, offline")
            await bob.send("while you were away")
            await bob.open_chat("alice")
            await bob.send("did you see this?")
            await alice.screenshot("5-reconnecting-phone")

            network.down = False
            await expect(status).to_have_text("connected", timeout=2 * WAIT)
            await expect(bob.entry("alice")).to_have_accessible_name("alice, online")
            await expect(alice.room()).to_contain_text("while you were away")
            await expect(alice.entry("bob")).to_have_accessible_name("bob, online, 1 unread")
            await alice.screenshot("6-caught-up-phone")
            await alice.open_chat("bob")
            await expect(alice.chat_with("bob")).to_contain_text("did you see this?")
            await alice.send("I did")
            await expect(bob.chat_with("alice")).to_contain_text("I did")

            # A new page (a reload) shows what the room and the inbox keep, once.
            await alice.page.reload()
            await alice.log_in()
            await expect(alice.room()).to_contain_text("while you were away")
            await alice.open_chat("bob")
            await expect(alice.chat_with("bob").get_by_text("did you see this?")).to_have_count(1)
            await expect(alice.chat_with("bob")).to_contain_text("I did")

            # Away while more was said than the room keeps: the page shows what it keeps now.
            network.down = True
            network.drop()
            await expect(status).to_have_text(re.compile(r"^reconnecting"))
            async with httpx.AsyncClient(base_url=f"http://{address}", headers=admin) as http:
                for n in range(1, 102):
                    response = await http.post("/announce", json={"text": f"a-{n:03}"})
                    assert response.status_code == 204
            network.down = False
            await expect(status).to_have_text("connected", timeout=2 * WAIT)
            await expect(alice.room()).to_contain_text("Some messages were missed")
            await expect(alice.room()).to_contain_text("a-101")
            await expect(alice.room()).to_contain_text("a-002")
            await expect(alice.room()).not_to_contain_text("a-001")
            # Each reconnect attempt first fetches a token over HTTP; attempts made while the
            # network was down fail (the browser logs them) and the page tries again later,
            # as everything above shows.
            assert alice.errors_besides_network_failures() == bob.errors == []


async def test_two_workers_on_redis_share_the_room_and_inboxes(
    browser: Browser, redis_url: str, redis_prefix: str
) -> None:
    """As ``REDIS_URL=... scripts/demo`` runs it: processes share Redis and the JWT secret."""
    env = {
        "REDIS_URL": f"{redis_url}?prefix={redis_prefix}-{uuid.uuid4().hex[:8]}",
        "DEMO_JWT_SECRET": secrets.token_urlsafe(32),
    }
    one, two = await asyncio.gather(*(start_process("demo.app:app", env) for _ in range(2)))
    try:
        async with asyncio.timeout(60):
            alice = await Person.open(browser, one.http, "alice", DESKTOP)
            bob = await Person.open(browser, two.http, "bob", PHONE)
            await asyncio.gather(alice.log_in(), bob.log_in())
            await expect(alice.entry("bob")).to_have_accessible_name("bob, online")
            await bob.send("hello from the other worker")
            await expect(alice.room()).to_contain_text("hello from the other worker")
            await bob.page.get_by_label("Private chat with").fill(" Alice")
            await bob.page.get_by_role("button", name="Open").click()
            await expect(
                bob.page.get_by_role("heading", name="Private chat with alice")
            ).to_be_visible()
            await alice.open_chat("bob")
            await alice.send("got it")
            await expect(bob.chat_with("alice")).to_contain_text("got it")
            await expect(alice.chat_with("bob")).to_contain_text("got it")
            assert alice.errors == bob.errors == []
    finally:
        one.stop()
        two.stop()
