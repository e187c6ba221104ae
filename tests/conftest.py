from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.requests import HTTPConnection

from fastapi_channels import Channels
from fastapi_channels.testing import SocketTestClient, lifespan

pytest_plugins = ["tests.redis_support"]


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

    def client(self, user: str | None = None, **options: Any) -> SocketTestClient:
        if user is not None:
            options.setdefault("query_string", f"user={user}")
        return SocketTestClient(self.app, **options)


Start = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """``await start(listeners=[...], ...)`` builds an app around ``Channels(...)`` and runs its
    lifespan until the end of the test. ``app=`` passes a prepared FastAPI app."""
    async with contextlib.AsyncExitStack() as stack:

        async def run(app: FastAPI | None = None, **options: Any) -> Harness:
            options.setdefault("user", user_from_query)
            channels = Channels(**options)
            app = app or FastAPI()
            app.include_router(channels.router)
            await stack.enter_async_context(lifespan(app))
            return Harness(channels, app)

        yield run
