"""Issue 18, item 2: inbound memory is bounded by the message size limit, not uvicorn's 16 MiB.

Run as the docs say (``--ws-max-size 65536``), uvicorn refuses a message as soon as it is
known to be too large: an 8 MB frame at its header, a fragmented message at the fragment that
crosses 64 KiB. Before, an 8 MB frame cost 8 MB, and ten unfinished 12 MB fragmented messages
held 120 MB, before the library's own check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
import websockets

from tests.security.conftest import WS_MAX_SIZE, Serve
from tests.security.frames import CONT, TEXT, close_code, connect, frame, send_ignoring_reset
from tests.security.resources import connections_to, open_files, rss

MIB = 1024 * 1024
TOO_BIG = 1009


async def test_an_8_mb_frame_is_refused_at_its_header(serve: Serve) -> None:
    async with serve() as target:
        files, memory = open_files(), rss()
        reader, writer = await connect(target.address)
        try:
            chunk = b"x" * 65_536
            head = frame(TEXT, chunk, length=8 * MIB)[: -len(chunk)]  # header and mask only
            await send_ignoring_reset(writer, head)
            for _ in range(16):  # 1 MiB of it: the server stopped reading at the header
                await send_ignoring_reset(writer, chunk)
            assert await close_code(reader) == TOO_BIG
        finally:
            writer.close()
        assert rss() - memory < 4 * MIB
    assert open_files() <= files


async def test_ten_unfinished_fragmented_messages_hold_next_to_nothing(serve: Serve) -> None:
    async with serve() as target:
        files, memory = open_files(), rss()
        fragment = b"x" * 60_000  # under the limit alone, over it with the next one
        peers = [await connect(target.address) for _ in range(10)]
        try:
            for _, writer in peers:
                await send_ignoring_reset(writer, frame(TEXT, fragment, fin=False))
            for _, writer in peers:
                for _ in range(8):  # towards a 12 MB message, never finished
                    await send_ignoring_reset(writer, frame(CONT, fragment, fin=False))
            codes = await asyncio.gather(*(close_code(reader) for reader, _ in peers))
            assert codes == [TOO_BIG] * 10
            grown = rss() - memory
        finally:
            for _, writer in peers:
                writer.close()
        assert grown < 8 * MIB  # was about 120 MB with uvicorn's default 16 MiB
        async with asyncio.timeout(10):
            for _, writer in peers:
                with contextlib.suppress(ConnectionResetError):
                    await writer.wait_closed()
    assert connections_to(target.port) == 0
    assert open_files() <= files


async def test_a_server_taking_larger_messages_is_reported_once(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="fastapi_channels.router"):
        async with serve(uvicorn={"ws_max_size": 16 * MIB}) as target:
            for _ in range(2):
                async with websockets.connect(target.url) as ws:
                    await ws.recv()  # ready
    warnings = [r.getMessage() for r in caplog.records if "--ws-max-size" in r.getMessage()]
    assert len(warnings) == 1
    assert f"run uvicorn with --ws-max-size {WS_MAX_SIZE}" in warnings[0]


async def test_the_documented_server_limit_draws_no_warning(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="fastapi_channels.router"):
        async with serve() as target, websockets.connect(target.url) as ws:
            await ws.recv()
    assert not [r for r in caplog.records if "--ws-max-size" in r.getMessage()]
