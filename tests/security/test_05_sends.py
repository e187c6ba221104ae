"""Issue 18, item 5: what the server's ``send`` is decides how frames are sent, and a
uvicorn that differs never fails a connection.

A middleware whose ``send`` opens a deadline runs in the connection's writer task, never
stepped in the broadcaster's task; a uvicorn whose protocol class was renamed still serves
every connection, through ASGI.
"""

from __future__ import annotations

import json
import logging
import sys

import pytest
import websockets

from fastapi_channels.edge import _direct
from tests.security.conftest import Room, Serve
from tests.test_servers import TimedSends, receive, subscribe


@pytest.mark.parametrize("kind", ["asyncio", "anyio"])
async def test_a_middleware_deadline_around_send_runs_in_the_writer(
    serve: Serve, kind: str
) -> None:
    made: list[TimedSends] = []

    def wrap(app: object) -> TimedSends:
        made.append(TimedSends(app, kind))  # type: ignore[arg-type]
        return made[0]

    async with serve(wrap=wrap) as target, websockets.connect(f"{target.url}?user=ann") as ws:
        await subscribe(ws)
        for n in range(10):
            await target.channels.server.broadcast(Room, "room", "said", n)
        assert [(await receive(ws))["data"] for _ in range(10)] == list(range(10))
    assert {name.rsplit(" ", 1)[0] for name in made[0].tasks} == {"fastapi_channels writer"}


async def test_a_uvicorn_whose_protocol_class_moved_still_serves(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        async with serve() as target:
            # The edge knows uvicorn's protocol by its class's module: as if it had moved.
            protocol_class = sys.modules[_direct._SANSIO_MODULE].WebSocketsSansIOProtocol
            monkeypatch.setattr(protocol_class, "__module__", "elsewhere")
            async with websockets.connect(f"{target.url}?user=ann") as ws:
                await subscribe(ws)
                (connection,) = target.channels.server.connections
                assert not connection.writes_directly  # through ASGI, and nothing raised
                say = {"event": "say", "channel": "room", "data": "hi", "id": 1}
                await ws.send(json.dumps(say))
                assert (await receive(ws))["data"] == "hi"
                assert (await receive(ws)) == {"event": "channels:reply", "id": 1, "data": "ok"}
            monkeypatch.undo()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
