"""Issue 18, item 8: pings count against the rate limit and unread pongs are bounded; what
uvicorn does with a partial upgrade request; the AsyncAPI document never reflects ``Host``."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from fastapi_channels.edge._uvicorn import uvicorn_protocol
from tests.security.conftest import Serve
from tests.security.frames import (
    PING,
    TEXT,
    close_code,
    connect,
    frame,
    read_frame,
    send_ignoring_reset,
    upgrade_request,
)

POLICY = 1008
KIB = 1024


async def test_a_ping_flood_is_counted_and_closed_with_1008(serve: Serve) -> None:
    async with serve(limits={"rate": 10, "burst": 20, "rate_strikes": 5}) as target:
        reader, writer = await connect(target.address)
        try:
            await send_ignoring_reset(writer, frame(PING, b"p" * 125) * 200)
            pongs = 0
            while True:
                opcode, payload = await read_frame(reader)
                if opcode == 0xA:
                    pongs += 1
                elif opcode == TEXT and json.loads(payload)["event"] == "disconnect":
                    assert json.loads(payload)["data"]["reason"] == "rate limit exceeded"
                    break
            assert await close_code(reader) == POLICY
            assert pongs <= 21  # the burst, and a token refilled meanwhile: not 200
        finally:
            writer.close()


async def test_pongs_a_client_does_not_read_are_bounded(serve: Serve) -> None:
    async with serve(limits={"rate": None}) as target:
        _, writer = await connect(target.address)
        try:
            (connection,) = target.channels.server.connections
            protocol = uvicorn_protocol(connection._transport._send)
            ping = frame(PING, b"p" * 125)
            for _ in range(12):  # 60,000 pings, 7.6 MB of pongs; this client reads none
                await send_ignoring_reset(writer, ping * 5_000)
            mark = frame(TEXT, json.dumps({"event": "mark", "data": "read"}).encode())
            await send_ignoring_reset(writer, mark)
            async with asyncio.timeout(10):
                assert await target.marks.get() == "read"  # every ping before it was read
            # What the server keeps for this peer: at most its transport's high-water mark
            # (64 KiB) and one pong; beyond that, pongs are dropped. Without the guard it held
            # everything the kernel's buffers did not (megabytes).
            assert protocol.transport.get_write_buffer_size() <= 64 * KIB + 256
        finally:
            writer.close()


async def test_a_pong_event_flood_is_counted_like_any_packet(serve: Serve) -> None:
    async with serve(limits={"rate": 10, "burst": 20, "rate_strikes": 5}) as target:
        async with websockets.connect(target.url) as ws:
            await ws.recv()  # ready
            for _ in range(100):
                await ws.send(json.dumps({"event": "pong"}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    while True:
                        await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == POLICY


async def test_uvicorn_keeps_a_partial_upgrade_request_open_past_its_keep_alive(
    serve: Serve,
) -> None:
    """What uvicorn does today (0.55): no timeout until the request's headers are complete;
    ``timeout_keep_alive`` only starts after a response. docs/deployment.md says what to set
    in front of it."""
    async with serve(uvicorn={"timeout_keep_alive": 1}) as target:
        host, port = target.address.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            request = upgrade_request(target.address)
            writer.write(request[:-2])  # all but the blank line ending the headers
            await writer.drain()
            with pytest.raises(TimeoutError):  # still open after 1.5 times the keep-alive
                async with asyncio.timeout(1.5):
                    await reader.read(1)
            writer.write(request[-2:])
            async with asyncio.timeout(10):
                assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
        finally:
            writer.close()


async def test_the_asyncapi_document_never_reflects_the_host_header(serve: Serve) -> None:
    async with serve() as target, httpx.AsyncClient() as http:
        response = await http.get(
            f"http://{target.address}/ws/asyncapi.json", headers={"Host": "evil.example"}
        )
    assert response.status_code == 200
    assert "servers" not in response.json()
    assert "evil.example" not in response.text
