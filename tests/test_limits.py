"""Limits: rate, connections per user and process, handshake deadline, graceful drain."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI

from fastapi_channels import (
    Channels,
    Limits,
    SocketConnection,
    SocketListener,
    SocketPacket,
    listener,
)
from fastapi_channels.testing import SocketTestClient, lifespan
from tests.conftest import Start, user_from_query


async def test_rate_limit_answers_then_closes_with_1008(start: Start) -> None:
    harness = await start(limits=Limits(rate=0.5, burst=2, rate_strikes=3))
    async with harness.client("a") as client, harness.client("b") as other:
        for _ in range(2):
            await client.emit("x")
            assert (await client.receive()).data["code"] == "unknown-event"
        for _ in range(2):
            await client.emit("x")
            assert (await client.receive()).data == {
                "code": "rate-limited",
                "message": "too many packets; slow down",
            }
        await client.emit("x")
        assert (await client.receive()).data == {"reason": "rate limit exceeded"}
        assert await client.receive_closed() == (1008, "rate limit exceeded")
        await other.emit("x")  # the others keep their own budget
        assert (await other.receive()).data["code"] == "unknown-event"


async def test_connections_per_user(start: Start) -> None:
    harness = await start(limits=Limits(max_connections_per_user=2))
    async with harness.client("a"), harness.client("a"), harness.client("b"):
        third = harness.client("a")
        assert await third.connect() == {
            "event": "disconnect",
            "data": {"reason": "too many connections"},
        }
        assert await third.receive_closed() == (1008, "too many connections")
    async with harness.client("a") as again:  # freed once the others left
        assert again.ready is not None


async def test_connections_per_process(start: Start) -> None:
    harness = await start(limits=Limits(max_connections=2))
    async with harness.client("a"), harness.client("b"):
        third = harness.client("c")
        assert (await third.connect()).data == {"reason": "server busy"}
        assert await third.receive_closed() == (1013, "server busy")


async def test_a_handshake_that_takes_too_long_is_refused(start: Start) -> None:
    never = asyncio.Event()

    async def slow_user() -> None:
        await never.wait()

    harness = await start(user=slow_user, limits=Limits(handshake_timeout=0.2))
    client = SocketTestClient(harness.app, subprotocols=["t"])
    assert (await client.connect()).data == {"reason": "handshake timed out"}
    assert client.subprotocol == "t"
    assert await client.receive_closed() == (1000, "handshake timed out")


started = asyncio.Event()
release = asyncio.Event()


@listener("slow")
class Slow(SocketListener):
    async def handle(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        started.set()
        await release.wait()
        await connection.send("done")


async def test_shutdown_lets_in_flight_handlers_finish_then_closes_with_1012() -> None:
    started.clear()
    release.clear()
    channels = Channels(user=user_from_query, listeners=[Slow], limits=Limits(shutdown_timeout=5))
    app = FastAPI()
    app.include_router(channels.router)
    context = lifespan(app)
    await context.__aenter__()
    busy = SocketTestClient(app, query_string="user=a")
    idle = SocketTestClient(app, query_string="user=b")
    await busy.expect_ready()
    await idle.expect_ready()
    await busy.emit("slow")
    async with asyncio.timeout(2):
        await started.wait()
    stopping = asyncio.ensure_future(context.__aexit__(None, None, None))
    async with asyncio.timeout(2):
        await channels.stopping.wait()
    await idle.emit("slow")
    assert (await idle.receive()).data == {
        "code": "shutting-down",
        "message": "server shutting down",
        "event": "slow",
    }
    assert not stopping.done()
    release.set()
    assert (await busy.receive()).event == "done"
    assert (await busy.receive()).data["reason"] == "server shutting down"
    assert (await busy.receive_closed())[0] == 1012
    assert (await idle.receive()).event == "disconnect"
    async with asyncio.timeout(5):
        await stopping
