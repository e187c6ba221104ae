"""The apps `bench.connect_cost` counts instructions in: connect, ``ready``, one subscribe.

No lag probe and no publisher run in them: nothing runs between connections but what serves
them. The hand-written app serves ``/ws-jwt`` with `bench.apps.handwritten_app`'s own endpoint
(the JWT dependency, ``ready``, a subscribe request answered) and ``/ws`` with the same
endpoint written without the dependency: a copy on purpose, since a shared helper would add a
coroutine frame that the code a user writes does not have.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from bench.apps.channels_app import jwt_user
from bench.apps.handwritten_app import clients, endpoint_jwt
from bench.common import ROOM
from fastapi_channels import ChannelListener, Channels, channel

handwritten = FastAPI()
handwritten.add_api_websocket_route("/ws-jwt", endpoint_jwt)


@handwritten.websocket("/ws")
async def endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
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


@channel(ROOM)
class AnonymousRoom(ChannelListener):
    pass


@channel(ROOM)
class Room(ChannelListener):
    pass


def _channels_app(channels: Channels) -> FastAPI:
    app = FastAPI()
    app.include_router(channels.router)
    return app


channels_anonymous = _channels_app(Channels(listeners=[AnonymousRoom]))
channels_jwt = _channels_app(Channels(user=jwt_user, listeners=[Room]))
