"""Issue 18, item 1: a peer that never reads is dropped after close_timeout, socket and all."""

from __future__ import annotations

import asyncio
import json

import websockets

from fastapi_channels import SocketConnection
from tests.security.conftest import Room, Serve
from tests.security.resources import connections_to, open_files
from tests.test_faults import closed_by_server, stalled_peer


async def test_a_peer_that_never_reads_is_reset_and_leaves_no_socket(serve: Serve) -> None:
    limits = {"queue_size": 50, "close_timeout": 0.3, "max_connections_per_user": 1}
    async with serve(limits=limits) as target:
        files = open_files()
        server = target.channels.server
        sock = await asyncio.to_thread(stalled_peer, target.address, path="/ws?user=ann")
        try:
            (stalled,) = server.connections
            gone = asyncio.Event()
            remove = server.remove_connection

            async def spy(connection: SocketConnection) -> None:
                await remove(connection)
                if connection is stalled:
                    gone.set()

            server.remove_connection = spy  # type: ignore[method-assign]
            for _ in range(2_000):  # fill the socket's buffers, then the queue: 1013
                if not stalled.is_open:
                    break
                await server.broadcast(Room, "room", "fill", "x" * 65_536)
                await asyncio.sleep(0)  # a loop turn, for the writer: not a wait for time
            assert not stalled.is_open
            async with asyncio.timeout(10):
                await gone.wait()  # close_timeout later, the server reset the socket
            sock.settimeout(10)
            assert await asyncio.to_thread(closed_by_server, sock)
        finally:
            sock.close()
        assert server.count_of("ann") == 0
        async with websockets.connect(f"{target.url}?user=ann") as again:
            assert json.loads(await again.recv())["event"] == "ready"
        assert connections_to(target.port) == 0  # reset: no TIME_WAIT, nothing half-closed
        assert open_files() <= files
