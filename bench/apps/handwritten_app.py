"""The best simple thing a user writes: a set of sockets, one pre-encoded string sent to each."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from bench.common import EVENT, Bench, add_routes, payload

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
