"""python-socketio with rooms: JWT in the connect ``auth``, a ``join`` event, ``emit(room=...)``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
import socketio
from fastapi import FastAPI

from bench.common import EVENT, JWT_ALGORITHM, JWT_SECRET, ROOM, Bench, add_routes, payload

sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins=[], transports=["websocket"])


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: dict[str, Any] | None) -> None:
    token = (auth or {}).get("token", "")
    try:
        claims = jwt.decode(token, JWT_SECRET, algorithms=[JWT_ALGORITHM])
    except jwt.InvalidTokenError:
        raise socketio.exceptions.ConnectionRefusedError("unauthorised") from None
    await sio.save_session(sid, {"user": claims})


@sio.event
async def join(sid: str, room: str) -> bool:
    await sio.enter_room(sid, room)
    return True


async def broadcast(seq: int) -> None:
    await sio.emit(EVENT, payload(seq), room=ROOM)


def count() -> int:
    return sum(1 for _ in sio.manager.get_participants("/", ROOM))


bench = Bench(broadcast, count)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with bench.running():
        yield


fastapi_app = FastAPI(lifespan=lifespan)
add_routes(fastapi_app, bench)
app = socketio.ASGIApp(sio, other_asgi_app=fastapi_app)
