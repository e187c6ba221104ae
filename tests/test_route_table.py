"""Where the websocket endpoint is served from: the app's own table, or its inclusion."""

from __future__ import annotations

from fastapi import FastAPI, WebSocket
from starlette.routing import WebSocketRoute

from fastapi_channels import ChannelListener, Channels, channel
from fastapi_channels.testing import SocketTestClient, lifespan


@channel("room")
class Room(ChannelListener):
    pass


def _app(prefix: str = "") -> tuple[FastAPI, Channels]:
    channels = Channels(listeners=[Room])
    app = FastAPI()
    app.include_router(channels.router, prefix=prefix)
    return app, channels


async def test_a_prefixed_endpoint_is_served_and_subscribes() -> None:
    app, _ = _app("/live")
    async with lifespan(app), SocketTestClient(app, path="/live/ws") as client:
        assert (await client.subscribe("room"))["successful"] is True


async def test_the_app_table_serves_the_endpoint_while_running_and_not_after() -> None:
    app, _ = _app()
    before = list(app.router.routes)
    async with lifespan(app):
        first = next(r for r in app.router.routes if isinstance(r, WebSocketRoute))
        assert first.path == "/ws" and first.name == "fastapi_channels"
    assert app.router.routes == before  # a restart finds the table as it was


async def test_an_earlier_route_at_the_same_path_keeps_it() -> None:
    app = FastAPI()

    @app.websocket("/ws")
    async def mine(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text('{"event": "mine"}')
        await websocket.receive()

    channels = Channels(listeners=[Room])
    app.include_router(channels.router)
    async with lifespan(app):
        client = SocketTestClient(app)
        assert (await client.connect(timeout=5)).event == "mine"
        await client.close()
