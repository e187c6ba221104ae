"""fastapi_channels: JWT in the subprotocol (as the Envuso client sends it), one ``bench`` channel.

``BENCH_BROKER`` selects the broker (``memory://`` by default, ``redis://...`` for the
cross-process run).
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
from fastapi_channels import ChannelListener, Channels, channel


async def jwt_user(connection: HTTPConnection) -> dict[str, Any]:
    """The user dependency a JWT app writes (async: a plain ``def`` runs in a thread pool)."""
    token = connection.headers.get("sec-websocket-protocol", "")
    try:
        claims: dict[str, Any] = jwt.decode(token, JWT_SECRET, algorithms=[JWT_ALGORITHM])
    except jwt.InvalidTokenError:
        raise HTTPException(401) from None
    return claims


@channel(ROOM)
class Room(ChannelListener):
    pass


channels = Channels(user=jwt_user, listeners=[Room], broker=os.environ.get("BENCH_BROKER"))
server = channels.server


async def broadcast(seq: int) -> None:
    await server.broadcast(Room, ROOM, EVENT, payload(seq))


bench = Bench(broadcast, lambda: len(server.subscribers(ROOM)))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with bench.running():
        yield


app = FastAPI(lifespan=lifespan)
app.include_router(channels.router)
add_routes(app, bench)
