"""Channels under other ASGI servers, and sends through middleware that needs its task.

The connection steps a send in place (outside any task) only when the ASGI ``send`` is
uvicorn's own; a middleware whose ``send`` opens ``asyncio.timeout`` or an anyio cancel scope
runs in the connection's writer task, and hypercorn and granian work end to end.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anyio
import pytest
import websockets
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_channels import SocketServer
from tests import servers_app
from tests.live import live_server
from tests.processes import start_process

TIMEOUT = 10.0


async def receive(ws: websockets.ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        packet: dict[str, Any] = json.loads(await ws.recv())
    return packet


async def subscribe(ws: websockets.ClientConnection) -> None:
    assert (await receive(ws))["event"] == "ready"
    await ws.send(json.dumps({"event": "subscribe-channel-request", "data": {"channel": "room"}}))
    answer = await receive(ws)
    assert answer["event"] == "subscribe-channel-response" and answer["data"]["successful"]


class TimedSends:
    """An ASGI middleware that gives every ``send`` a deadline, as tracing middleware does."""

    def __init__(self, app: ASGIApp, scope_kind: str) -> None:
        self.app = app
        self.kind = scope_kind
        self.sent: list[str] = []
        self.tasks: set[str] = set()  # the tasks the frames were sent in

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def timed(message: Message) -> None:
            task = asyncio.current_task()
            if self.kind == "asyncio":
                async with asyncio.timeout(TIMEOUT):
                    await send(message)
            else:
                with anyio.fail_after(TIMEOUT):
                    await send(message)
            if message["type"] == "websocket.send":
                self.sent.append(json.loads(message["text"])["event"])
                self.tasks.add(task.get_name() if task is not None else "no task")

        await self.app(scope, receive, timed)


@pytest.mark.parametrize("kind", ["asyncio", "anyio"])
async def test_a_middleware_send_with_a_deadline_runs_in_a_task_and_sees_every_frame(
    kind: str,
) -> None:
    middleware = TimedSends(servers_app.app, kind)
    server = servers_app.channels.container.get(SocketServer)
    async with (
        live_server(middleware) as address,
        websockets.connect(f"ws://{address}/ws?user=ann") as ws,
    ):
        await subscribe(ws)
        for n in range(20):  # from outside any connection: a fan-out, as a broker delivers it
            await server.broadcast(servers_app.Room, "room", "said", {"n": n})
        for n in range(20):
            assert (await receive(ws))["data"] == {"n": n}
        await ws.send(json.dumps({"event": "say", "channel": "room", "data": "hi", "id": 1}))
        said, reply = await receive(ws), await receive(ws)
        assert said["data"] == {"by": "ann", "text": "hi"}
        assert reply == {"event": "channels:reply", "id": 1, "data": 2}
    # Each frame was sent by the connection's writer, never stepped in the broadcaster's task
    # (here the test's, in a deployment the Redis reader's), where a deadline would cancel it.
    assert {name.rsplit(" ", 1)[0] for name in middleware.tasks} == {"fastapi_channels writer"}
    assert middleware.sent[:2] == ["ready", "subscribe-channel-response"]
    assert middleware.sent[2:] == ["said"] * 21 + ["channels:reply"]


LISTENING = {"hypercorn": "Running on http://127.0.0.1:", "granian": "Started worker-1"}
"""What each server says once it accepts connections (granian binds its socket earlier, and
listens from the worker)."""


async def accepting(port: int) -> None:
    """Wait until the port accepts a connection: granian's worker says it started a moment
    before its socket does, and nothing it writes marks that moment, so this tries again, at
    most 100 times, 20 ms apart."""
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError(f"nothing accepts connections on port {port}")


@pytest.mark.parametrize("server", ["hypercorn", "granian"])
async def test_channels_work_end_to_end_under_another_server(server: str) -> None:
    ready = (servers_app.READY, LISTENING[server])
    process = await start_process(
        "tests.servers_app:app", {}, server=server, health=False, ready=ready
    )
    try:
        await accepting(process.port)
        url = f"ws://127.0.0.1:{process.port}/ws"
        async with (
            websockets.connect(f"{url}?user=ann") as ann,
            websockets.connect(f"{url}?user=bob") as bob,
        ):
            await subscribe(ann)
            await subscribe(bob)
            await ann.send(json.dumps({"event": "say", "channel": "room", "data": "hey", "id": 7}))
            said = {"event": "said", "channel": "room", "data": {"by": "ann", "text": "hey"}}
            assert await receive(bob) == said
            first, second = await receive(ann), await receive(ann)
            assert first == said
            assert second == {"event": "channels:reply", "id": 7, "data": 3}
            await ann.close()
            assert ann.close_code == 1000
            await bob.close()
    finally:
        process.stop()
