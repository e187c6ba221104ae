"""fastapi_channels: JWT in the subprotocol (as the Envuso client sends it), one ``bench`` channel.

``BENCH_BROKER`` selects the broker (``memory://`` by default, ``redis://...`` for the
cross-process run); ``BENCH_MAX_CONNECTIONS`` raises ``Limits.max_connections`` (the huge plan);
``BENCH_MAX_BACKLOG_AGE`` sets ``Limits.max_backlog_age`` in seconds (``none`` turns it off), to
see what the bound costs and buys.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
from fastapi import FastAPI, HTTPException
from starlette.requests import HTTPConnection

from bench.common import EVENT, JWT_ALGORITHM, JWT_SECRET, ROOM, Bench, add_routes, payload
from fastapi_channels import ChannelListener, Channels, Limits, channel


async def jwt_user(connection: HTTPConnection) -> dict[str, Any]:
    """The user dependency a JWT app writes (async: a plain ``def`` runs in a thread pool)."""
    token = connection.headers.get("sec-websocket-protocol", "")
    try:
        claims: dict[str, Any] = jwt.decode(token, JWT_SECRET, algorithms=[JWT_ALGORITHM])
    except jwt.InvalidTokenError:
        raise HTTPException(401) from None
    return claims


def _age_of(text: str) -> float | None:
    return None if text == "none" else float(text)


@channel(ROOM)
class Room(ChannelListener):
    pass


_age = os.environ.get("BENCH_MAX_BACKLOG_AGE")
limits = Limits(
    max_connections=int(os.environ.get("BENCH_MAX_CONNECTIONS", "10000")),
    **({} if _age is None else {"max_backlog_age": _age_of(_age)}),
)
channels = Channels(
    user=jwt_user, listeners=[Room], broker=os.environ.get("BENCH_BROKER"), limits=limits
)
server = channels.server


async def broadcast(seq: int) -> None:
    await server.broadcast(Room, ROOM, EVENT, payload(seq))


def counters() -> dict[str, int]:
    """Frames the overflow policy dropped and connections closed as too slow (1013)."""
    return {"dropped": server.stats.dropped, "closed_too_slow": server.stats.closes[1013]}


bench = Bench(broadcast, lambda: len(server.subscribers(ROOM)), counters)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with bench.running():
        yield


app = FastAPI(lifespan=lifespan)
app.include_router(channels.router)
add_routes(app, bench)
