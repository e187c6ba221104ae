"""A publisher that outruns its subscribers waits: the server's backlog is bounded in time.

The clock is the test's: frames become "old" when the test says so, never by waiting.
"""

from __future__ import annotations

import asyncio

import pytest

from fastapi_channels import (
    ConfigurationError,
    Limits,
    MemoryBroker,
    SocketConnection,
    SocketServer,
)
from fastapi_channels.app.listeners import ChannelListener, channel
from fastapi_channels.core.fanout import WAIT_MAX
from tests import specs
from tests.test_connection_queue import GatedTransport

BOUND = 0.05


@channel("room")
class Room(ChannelListener):
    pass


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class UndrainedBuffer:
    """A direct writer whose transport keeps every byte until the test lets them go."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.written = 0
        self.sent = 0

    def __call__(self, text: str) -> bool:
        self.frames.append(text)
        self.written += len(text)
        return True

    def taken(self) -> int:
        return self.sent

    def drain(self) -> None:
        self.sent = self.written


async def serving(
    clock: Clock, connections: list[SocketConnection], max_backlog_age: float | None = BOUND
) -> SocketServer:
    server = SocketServer(MemoryBroker(), max_backlog_age=max_backlog_age, clock=clock)
    await server.start()
    room = specs.spec("room")
    for connection in connections:
        connection.start()
        await server.add_connection(connection)
        await server.add_subscription(connection, specs.subscription("room", room))
    return server


async def turns(count: int = 20) -> None:
    """Let the loop run ``count`` turns: enough for an unhindered broadcast to finish."""
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_broadcast_waits_while_most_subscribers_hold_old_frames() -> None:
    clock = Clock()
    transports = [GatedTransport(open_gate=False) for _ in range(4)]
    connections = [SocketConnection(t, id=str(n)) for n, t in enumerate(transports)]
    server = await serving(clock, connections)
    for n in range(3):  # young frames: no wait, even though nobody reads
        await asyncio.wait_for(server.broadcast(Room, "room", "tick", n), 2)
    clock.now = 1.0  # those frames are now older than the bound
    late = asyncio.create_task(server.broadcast(Room, "room", "tick", 3))
    await turns()
    assert not late.done()
    assert all(c.queued == 2 for c in connections)  # frame 3 was not published yet
    for transport in transports:
        transport.gate.set()
    await asyncio.wait_for(late, 2)
    for transport in transports:
        frames = await transport.wait_for(4)
        assert [f'"data":{n}' in frame for n, frame in enumerate(frames)] == [True] * 4
    await server.stop(timeout=2)


async def test_one_stalled_subscriber_does_not_hold_the_publisher() -> None:
    clock = Clock()
    stalled = GatedTransport(open_gate=False)
    healthy = [GatedTransport() for _ in range(4)]
    connections = [
        SocketConnection(t, id=str(n), max_queue=100) for n, t in enumerate([stalled, *healthy])
    ]
    server = await serving(clock, connections)
    for n in range(30):
        await asyncio.wait_for(server.broadcast(Room, "room", "tick", n), 2)
        clock.now += 1.0  # every frame the stalled peer holds is old at once
    for transport in healthy:
        assert len(await transport.wait_for(30)) == 30
    stalled.gate.set()
    await server.stop(timeout=2)


async def test_bytes_left_in_the_write_buffers_hold_the_publisher_until_sent() -> None:
    clock = Clock()
    buffers = [UndrainedBuffer() for _ in range(3)]
    connections = [
        SocketConnection(GatedTransport(), id=str(n), direct=b, progress=b)
        for n, b in enumerate(buffers)
    ]
    server = await serving(clock, connections)
    for n in range(3):  # one probe on each recipient
        await asyncio.wait_for(server.broadcast(Room, "room", "tick", n), 2)
    clock.now = 1.0
    late = asyncio.create_task(server.broadcast(Room, "room", "tick", 3))
    await turns()
    assert not late.done()
    assert [len(b.frames) for b in buffers] == [3, 3, 3]
    for buffer in buffers:  # the sockets take what waited
        buffer.drain()
    await asyncio.wait_for(late, 2)
    assert [len(b.frames) for b in buffers] == [4, 4, 4]
    await server.stop(timeout=2)


async def test_recipients_that_read_nothing_hold_a_publish_for_wait_max_at_most() -> None:
    clock = Clock()
    transports = [GatedTransport(open_gate=False) for _ in range(3)]
    connections = [SocketConnection(t, id=str(n)) for n, t in enumerate(transports)]
    server = await serving(clock, connections)
    for n in range(3):
        await asyncio.wait_for(server.broadcast(Room, "room", "tick", n), 2)
    clock.now = 1.0
    late = asyncio.create_task(server.broadcast(Room, "room", "tick", 3))
    await turns()
    assert not late.done()
    clock.now += WAIT_MAX  # nobody read anything meanwhile: the publish goes ahead
    await asyncio.wait_for(late, 2)
    assert all(c.queued == 3 for c in connections)  # queued, for the overflow policy
    for transport in transports:
        transport.gate.set()
    await server.stop(timeout=2)


async def test_without_a_bound_in_time_the_publisher_never_waits_for_old_frames() -> None:
    clock = Clock()
    transports = [GatedTransport(open_gate=False) for _ in range(2)]
    connections = [SocketConnection(t, id=str(n)) for n, t in enumerate(transports)]
    server = await serving(clock, connections, max_backlog_age=None)
    for n in range(5):
        await asyncio.wait_for(server.broadcast(Room, "room", "tick", n), 2)
        clock.now += 1.0
    assert all(c.queued == 4 for c in connections)
    for transport in transports:
        transport.gate.set()
    await server.stop(timeout=2)


@pytest.mark.parametrize("bad", [0, -0.5, float("inf"), True, "0.1"], ids=repr)
def test_the_bound_is_seconds_above_zero_or_none(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="max_backlog_age"):
        Limits(max_backlog_age=bad)  # type: ignore[arg-type]
    assert Limits(max_backlog_age=None).max_backlog_age is None
    assert Limits().max_backlog_age == 0.02


class Ticking:
    """A direct writer whose every frame takes 10 µs of the test's clock, and then is sent."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.written = 0

    def __call__(self, text: str) -> bool:
        self.clock.now += 1e-5
        self.written += len(text)
        return True

    def taken(self) -> int:
        return self.written


async def test_a_publisher_waits_once_the_queued_fan_outs_would_take_longer_than_the_bound() -> (
    None
):
    """At the measured pace (100,000 recipients/s) the 0.05 s bound holds 5,000 recipients:
    with 8,000 waiting the publisher waits before any of them is old, and the fan-out is no
    longer behind once those still waiting would be served within the bound."""
    clock = Clock()
    connections, writers = [], []
    for n in range(2000):
        writer = Ticking(clock)
        writers.append(writer)
        connection = SocketConnection(GatedTransport(), id=str(n), direct=writer, progress=writer)
        connection.start()
        connections.append(connection)
    server = SocketServer(MemoryBroker(), max_backlog_age=BOUND, clock=clock)
    fan_out = server.fan_out
    for n in range(5):  # the first chunk is served at once; the pace is not known yet
        fan_out.send(connections, f"frame {n}", None)
    assert not fan_out.behind
    publisher = asyncio.create_task(fan_out.wait_drained())
    await asyncio.sleep(0)  # the second chunk: 1,000 recipients in 0.01 s of the clock
    assert clock.now == pytest.approx(0.02)  # the oldest waiting fan-out is 0.01 s old
    assert fan_out.behind  # 4 fan-outs of 2,000 wait: 0.08 s at that pace
    assert not publisher.done()
    for _ in range(3):
        await asyncio.sleep(0)
    assert clock.now == pytest.approx(0.05, abs=1e-4)
    assert not fan_out.behind  # 4,000 recipients wait behind the one served: 0.04 s
    await asyncio.wait_for(publisher, 2)
    for _ in range(10):  # what waited is served (1,000 recipients a turn)
        await asyncio.sleep(0)
    assert [w.written for w in writers] == [5 * len("frame 0")] * 2000
