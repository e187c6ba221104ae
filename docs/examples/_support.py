"""What the examples' `check()` functions share: an app started, with an HTTP client of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.types import ASGIApp

from fastapi_channels.testing import lifespan


@asynccontextmanager
async def started(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """Run `app`'s lifespan and yield an in-process HTTP client of it."""
    transport = httpx.ASGITransport(app=app)
    async with lifespan(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http
