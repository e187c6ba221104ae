"""The outgoing queue: order, overflow policies, and a slow peer never stalling others."""

from __future__ import annotations

import asyncio

import pytest

from fastapi_channels import MemoryBroker, OverflowPolicy, SocketConnection, SocketServer
from fastapi_channels.app.listeners import ChannelListener, channel
from tests import specs


class GatedTransport:
    """A transport whose sends wait until the gate opens, like a peer that stopped reading."""

    def __init__(self, open_gate: bool = True) -> None:
        self.gate = asyncio.Event()
        if open_gate:
            self.gate.set()
        self.frames: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.received = asyncio.Condition()

    async def send_text(self, text: str) -> None:
        await self.gate.wait()
        async with self.received:
            self.frames.append(text)
            self.received.notify_all()

    async def close(self, code: int, reason: str) -> None:
        await self.gate.wait()
        async with self.received:
            self.closed = (code, reason)
            self.received.notify_all()

    async def wait_for(self, count: int) -> list[str]:
        async with asyncio.timeout(2), self.received:
            await self.received.wait_for(lambda: len(self.frames) >= count)
        return self.frames


def make(policy: OverflowPolicy, transport: GatedTransport) -> SocketConnection:
    connection = SocketConnection(transport, id="c", max_queue=3, overflow=policy)
    connection.start()
    return connection


async def test_frames_are_sent_in_order() -> None:
    transport = GatedTransport()
    connection = make(OverflowPolicy.DISCONNECT, transport)
    for n in range(3):
        assert connection.push(str(n))
    assert await transport.wait_for(3) == ["0", "1", "2"]


async def test_drop_oldest_keeps_the_newest_frames() -> None:
    transport = GatedTransport(open_gate=False)
    connection = make(OverflowPolicy.DROP_OLDEST, transport)
    connection.push("0")
    await asyncio.sleep(0)  # the writer takes "0" and blocks on the gate
    for n in range(1, 6):
        assert connection.push(str(n))
    transport.gate.set()
    assert await transport.wait_for(4) == ["0", "3", "4", "5"]


async def test_drop_newest_keeps_the_oldest_frames() -> None:
    transport = GatedTransport(open_gate=False)
    connection = make(OverflowPolicy.DROP_NEWEST, transport)
    connection.push("0")
    await asyncio.sleep(0)
    results = [connection.push(str(n)) for n in range(1, 6)]
    assert results == [True, True, True, False, False]
    transport.gate.set()
    assert await transport.wait_for(4) == ["0", "1", "2", "3"]


async def test_disconnect_policy_sends_a_reason_and_closes_with_1013() -> None:
    transport = GatedTransport(open_gate=False)
    connection = make(OverflowPolicy.DISCONNECT, transport)
    connection.push("0")
    await asyncio.sleep(0)
    for n in range(1, 5):
        connection.push(str(n))
    assert not connection.is_open
    assert connection.push("late") is False
    transport.gate.set()
    await connection.wait_closed(timeout=2)
    assert transport.frames == ["0", '{"event":"disconnect","data":{"reason":"too slow"}}']
    assert transport.closed == (1013, "too slow")


@channel("room")
class Room(ChannelListener):
    pass


@pytest.mark.parametrize("policy", list(OverflowPolicy), ids=lambda p: p.value)
async def test_a_stalled_peer_does_not_delay_the_others(policy: OverflowPolicy) -> None:
    server = SocketServer(MemoryBroker())
    await server.start()
    room = specs.spec("room")
    stalled = GatedTransport(open_gate=False)
    healthy = [GatedTransport() for _ in range(5)]
    connections = []
    for n, transport in enumerate([stalled, *healthy]):
        size = 3 if transport is stalled else 100
        connection = SocketConnection(transport, id=str(n), max_queue=size, overflow=policy)
        connection.start()
        await server.add_connection(connection)
        await server.add_subscription(connection, specs.subscription("room", room))
        connections.append(connection)
    for n in range(20):
        await server.broadcast(Room, "room", "tick", n)
    for transport in healthy:
        frames = await transport.wait_for(20)
        assert len(frames) == 20
    assert connections[0].queued <= 3
    stalled.gate.set()
    await server.stop(timeout=2)
