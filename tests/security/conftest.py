"""The security suite's server: a small app under a real uvicorn, run as the docs say.

Each finding of issue 18 is replayed as an attack against it (one module per finding). The
server runs in the test's process and loop (tests/live.py), so what it holds is this process's
open files, memory and sockets (`tests.security.resources`). It is started with
``ws_max_size=65536``, the documented setting matching ``Limits.max_message_size``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI

from fastapi_channels import (
    ChannelListener,
    Channels,
    Limits,
    SocketConnection,
    SocketListener,
    SocketPacket,
    channel,
    listener,
)
from tests.conftest import user_from_query
from tests.live import live_server

WS_MAX_SIZE = 65536
"""uvicorn's ``--ws-max-size`` as the docs set it: ``Limits().max_message_size``."""


@channel("room")
class Room(ChannelListener):
    @channel.on("say")
    async def say(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> str:
        await self.broadcast(self.channel_name, "said", packet.data)
        return "ok"


@dataclass
class Target:
    """A running server under attack: its address, its app and channels, and marks."""

    address: str
    port: int
    channels: Channels
    app: FastAPI
    marks: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)

    @property
    def url(self) -> str:
        return f"ws://{self.address}/ws"


def _marker(marks: asyncio.Queue[Any]) -> type[SocketListener]:
    @listener("mark")
    class Marker(SocketListener):
        """``mark`` puts its data on the target's queue: an attack's frames before it are read."""

        async def handle(
            self, connection: SocketConnection, user: Any, packet: SocketPacket
        ) -> None:
            marks.put_nowait(packet.data)

    return Marker


Serve = Callable[..., AbstractAsyncContextManager[Target]]


@pytest.fixture
def serve() -> Serve:
    """``async with serve(limits=..., channels={...}, uvicorn={...}) as target:`` runs the app.

    ``limits`` are `Limits` fields; ``channels`` more ``Channels`` options; ``uvicorn`` more
    ``uvicorn.Config`` options (``ws_max_size`` is 65536 unless given); ``wrap`` an ASGI
    middleware class put around the app.
    """

    @asynccontextmanager
    async def run(
        *,
        limits: dict[str, Any] | None = None,
        channels: dict[str, Any] | None = None,
        uvicorn: dict[str, Any] | None = None,
        wrap: Callable[[Any], Any] | None = None,
    ) -> AsyncIterator[Target]:
        marks: asyncio.Queue[Any] = asyncio.Queue()
        options = {"user": user_from_query, "listeners": [Room, _marker(marks)], **(channels or {})}
        built = Channels(limits=Limits(**(limits or {})), **options)
        app = FastAPI()
        app.include_router(built.router)
        config = {"ws_max_size": WS_MAX_SIZE, **(uvicorn or {})}
        async with live_server(wrap(app) if wrap else app, **config) as address:
            port = int(address.rsplit(":", 1)[1])
            yield Target(address, port, built, app, marks)

    return run
