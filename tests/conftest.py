from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.requests import HTTPConnection

from fastapi_channels import Broker, Channels, MemoryBroker
from fastapi_channels.brokers import MemoryHub
from fastapi_channels.testing import SocketTestClient, lifespan
from tests.client_app import create_app
from tests.live import live_server
from tests.proxy import TcpProxy, tcp_proxy

pytest_plugins = [
    "tests.redis_support",
    "tests.redis_ha",
    "tests.redis_cluster",
    "tests.nats_support",
]


def user_from_query(connection: HTTPConnection) -> dict[str, str] | None:
    """A test user dependency: ``?user=NAME`` makes the connection NAME's, else anonymous."""
    name = connection.query_params.get("user")
    return {"id": name, "name": name} if name else None


class Harness:
    """An app built around one running Channels instance."""

    def __init__(self, channels: Channels, app: FastAPI) -> None:
        self.channels = channels
        self.app = app
        self.server = channels.server

    @classmethod
    def build(cls, app: FastAPI | None = None, **options: Any) -> Harness:
        """An app around ``Channels(**options)`` (users from ``?user=``), not started yet: run
        it with ``lifespan(harness.app)``."""
        options.setdefault("user", user_from_query)
        channels = Channels(**options)
        app = app or FastAPI()
        app.include_router(channels.router)
        return cls(channels, app)

    def client(self, user: str | None = None, **options: Any) -> SocketTestClient:
        if user is not None:
            options.setdefault("query_string", f"user={user}")
        return SocketTestClient(self.app, **options)


Start = Callable[..., Awaitable[Harness]]


class BareBroker(Broker):
    """A broker with no optional capability, delivering nothing."""

    async def publish(self, topic: str, data: bytes) -> None:
        return None

    async def _subscribe(self, topic: str) -> None:
        return None

    async def _unsubscribe(self, topic: str) -> None:
        return None


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Poll ``check`` until it holds, for at most ``within`` seconds: only for state that the
    passing of time changes (an expiry), where there is no event to wait on."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


@pytest.fixture(params=["memory", "redis"])
def make_broker(request: pytest.FixtureRequest) -> Callable[[], Broker]:
    """Makes brokers of one kind: every test using it, or ``start``, runs on each broker.

    The brokers one test makes behave as processes of one deployment: memory brokers share one
    hub; Redis brokers use the shared test server, under a channel prefix of the test's own.
    """
    if request.param == "memory":
        hub = MemoryHub()
        return lambda: MemoryBroker(hub)
    from fastapi_channels.brokers.redis import RedisBroker

    url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("redis_prefix")
    return lambda: RedisBroker(url, prefix=prefix)


@pytest.fixture
async def start(make_broker: Callable[[], Broker]) -> AsyncIterator[Start]:
    """``await start(listeners=[...], ...)`` builds an app around ``Channels(...)`` and runs its
    lifespan until the end of the test. ``app=`` passes a prepared FastAPI app. It runs on each
    broker (see ``make_broker``) unless ``broker=`` is given."""
    async with contextlib.AsyncExitStack() as stack:

        async def run(app: FastAPI | None = None, **options: Any) -> Harness:
            if "broker" not in options:
                options["broker"] = make_broker()
            harness = Harness.build(app, **options)
            await stack.enter_async_context(lifespan(harness.app))
            return harness

        yield run


@pytest.fixture
async def address() -> AsyncIterator[str]:
    """``host:port`` of ``tests/client_app.py`` served by uvicorn, for the client tests."""
    async with live_server(create_app()) as address:
        yield address


@pytest.fixture
async def proxy(address: str) -> AsyncIterator[TcpProxy]:
    """A proxy to ``address`` that can drop its connections the way a network failure does."""
    async with tcp_proxy(int(address.rsplit(":", 1)[1])) as proxy:
        yield proxy
