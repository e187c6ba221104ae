"""The best simple thing a user writes: a set of sockets, one pre-encoded string sent to each.

``/ws`` is the plain endpoint. ``/ws-jwt`` does what a fastapi_channels connection does before
its first broadcast, by hand: JWT from the subprotocol (an async dependency), a ``ready``
frame, a subscribe request answered with one frame. Both share the broadcast set.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
from fastapi import Depends, FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from starlette.requests import HTTPConnection

from bench.common import EVENT, JWT_ALGORITHM, JWT_SECRET, Bench, add_routes, payload

clients: set[WebSocket] = set()


async def broadcast(seq: int) -> None:
    frame = json.dumps({"event": EVENT, "data": payload(seq)}, separators=(",", ":"))
    for websocket in list(clients):
        try:
            await websocket.send_text(frame)
        except Exception:
            clients.discard(websocket)


bench = Bench(broadcast, lambda: len(clients))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with bench.running():
        yield


app = FastAPI(lifespan=lifespan)
add_routes(app, bench)


@app.websocket("/ws")
async def endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    clients.add(websocket)
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        clients.discard(websocket)


async def jwt_user(connection: HTTPConnection) -> dict[str, Any]:
    token = connection.headers.get("sec-websocket-protocol", "")
    try:
        claims: dict[str, Any] = jwt.decode(token, JWT_SECRET, algorithms=[JWT_ALGORITHM])
    except jwt.InvalidTokenError:
        raise HTTPException(401) from None
    return claims


@app.websocket("/ws-jwt")
async def endpoint_jwt(websocket: WebSocket, user: dict[str, Any] = Depends(jwt_user)) -> None:
    await websocket.accept(subprotocol=websocket.headers.get("sec-websocket-protocol"))
    await websocket.send_text('{"event":"ready","data":{}}')
    try:
        request = json.loads(await websocket.receive_text())
        clients.add(websocket)
        channel = request["data"]["channel"]
        await websocket.send_text(
            json.dumps({"event": "subscribe-channel-response", "data": {"channel": channel}})
        )
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        clients.discard(websocket)
