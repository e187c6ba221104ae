"""The HTTP API fuzzed from its own OpenAPI document (schemathesis): no input makes a 500.

The app runs in-process with its lifespan started, on an event loop in a thread of its own;
each generated request is sent to it through httpx's ASGI transport, with the API key (so the
inputs reach validation and the routes, not only the guard). The number of examples per
operation is small, to keep the suite fast.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from fastapi_channels.testing import lifespan
from tests.api_app import API_KEY, create_app

app = create_app()
schema = schemathesis.openapi.from_dict(app.openapi())
TIMEOUT = 15.0


class AppThread:
    """The app's lifespan running on a loop in a thread; `send` runs one request there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),))

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        async with lifespan(app):
            self._started.set()
            await self._stop.wait()

    def __enter__(self) -> AppThread:
        self._thread.start()
        assert self._started.wait(TIMEOUT), "the app did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(TIMEOUT)
        self.loop.close()

    def send(self, request: dict[str, Any]) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                return await http.request(**request)

        future = asyncio.run_coroutine_threadsafe(call(), self.loop)
        return future.result(TIMEOUT)


@pytest.fixture(scope="module")
def running() -> Iterator[AppThread]:
    with AppThread() as thread:
        yield thread


@schema.include(path_regex="^/ws/api/").parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_input_makes_a_server_error(case: Any, running: AppThread) -> None:
    given = case.as_transport_kwargs(base_url="http://test", headers={"X-API-Key": API_KEY})
    request = {
        k: v for k, v in given.items() if k in ("method", "url", "headers", "params", "json")
    }
    response = running.send(request)
    assert response.status_code < 500, (case.as_curl_command(), response.text)
