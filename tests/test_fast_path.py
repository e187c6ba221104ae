"""Sending in place, batching for clients that ask, and chunked fan-out to huge channels."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from fastapi_channels import ChannelListener, MemoryBroker, SocketConnection, SocketServer, channel
from fastapi_channels.core import fanout as fanout_module
from fastapi_channels.core.channel import Subscription
from fastapi_channels.core.connection import BatchCache
from tests import specs
from tests.conftest import Start
from tests.test_connection_queue import GatedTransport


@channel("room")
class Room(ChannelListener):
    pass


def subscription(name: str = "room") -> Subscription:
    return specs.subscription(name)


async def test_an_idle_connection_writes_before_push_returns() -> None:
    transport = GatedTransport()
    connection = SocketConnection(transport, id="c")
    connection.start()
    connection.push("0")
    assert transport.frames == ["0"]


async def test_order_is_kept_across_a_send_that_has_to_wait() -> None:
    transport = GatedTransport(open_gate=False)
    connection = SocketConnection(transport, id="c")
    connection.start()
    connection.push("0")  # suspends: the peer does not read
    connection.push("1")
    connection.push("2")
    assert connection.queued == 2
    transport.gate.set()
    assert await transport.wait_for(3) == ["0", "1", "2"]
    connection.push("3")
    assert await transport.wait_for(4) == ["0", "1", "2", "3"]


async def test_a_failing_send_closes_only_that_connection() -> None:
    class Broken(GatedTransport):
        async def send_text(self, text: str) -> None:
            raise ConnectionResetError("peer gone")

    server = SocketServer(MemoryBroker())
    await server.start()
    broken = SocketConnection(Broken(), id="broken")
    healthy_transport = GatedTransport()
    healthy = SocketConnection(healthy_transport, id="healthy")
    for connection in (broken, healthy):
        connection.start()
        await server.add_connection(connection)
        await server.add_subscription(connection, subscription())
    await server.broadcast(Room, "room", "tick", 1)
    assert not broken.is_open
    assert [json.loads(f)["data"] for f in await healthy_transport.wait_for(1)] == [1]
    await server.stop(timeout=1)


async def test_frames_of_one_loop_turn_go_out_as_one_batch() -> None:
    transport = GatedTransport()
    connection = SocketConnection(transport, id="c")
    connection.start()
    connection.enable_batching()
    for n in range(3):
        connection.push(json.dumps({"event": "e", "data": n}))
    assert transport.frames == []  # sent at the end of this loop turn
    frames = await transport.wait_for(1)
    assert [json.loads(f) for f in frames] == [[{"event": "e", "data": n} for n in range(3)]]
    connection.push('{"event":"e","data":3}')
    assert await transport.wait_for(2)
    assert transport.frames[1] == '{"event":"e","data":3}'  # alone: not wrapped


async def test_batches_of_the_same_frames_are_shared_and_others_are_not() -> None:
    shared = [json.dumps({"event": "e", "data": n}) for n in range(3)]
    own = [json.dumps({"event": "mine", "data": n}) for n in range(3)]
    transports = [GatedTransport() for _ in range(4)]
    cache = BatchCache()  # as the endpoint gives all the connections of one router
    connections = [SocketConnection(t, id=str(n), batches=cache) for n, t in enumerate(transports)]
    for connection in connections:
        connection.start()
        connection.enable_batching()
    for n, connection in enumerate(connections):
        middle = shared[1] if n < 2 else own[n - 2]  # the last two differ from the first two
        for frame in (shared[0], middle, shared[2]):
            connection.push(frame)
    batches = [json.loads((await t.wait_for(1))[0]) for t in transports]
    expected = [json.loads(f) for f in shared]
    assert batches[0] == batches[1] == expected
    assert batches[2] == [expected[0], json.loads(own[0]), expected[2]]
    assert batches[3] == [expected[0], json.loads(own[1]), expected[2]]
    assert transports[0].frames[0] is transports[1].frames[0]  # built once


async def test_connections_that_share_no_cache_build_their_own_batches() -> None:
    frames = [json.dumps({"event": "e", "data": n}) for n in range(3)]
    transports = [GatedTransport() for _ in range(2)]
    for n, transport in enumerate(transports):
        connection = SocketConnection(transport, id=str(n))
        connection.start()
        connection.enable_batching()
        for frame in frames:
            connection.push(frame)
    first, second = [(await t.wait_for(1))[0] for t in transports]
    assert first == second == f"[{','.join(frames)}]"
    assert first is not second  # nothing kept between them outside the connections


async def test_batching_is_negotiated_and_others_are_unaffected(start: Start) -> None:
    harness = await start(listeners=[Room])
    async with harness.client() as plain, harness.client() as batching:
        await batching.emit("channels:batch", {"enabled": True})
        answer = await batching.receive()
        assert (answer.event, answer.data) == ("channels:batch", {"enabled": True})
        for client in (plain, batching):
            assert (await client.subscribe("room"))["successful"]
        for n in range(3):
            await harness.server.broadcast(Room, "room", "tick", n)
        if isinstance(harness.server.broker, MemoryBroker):  # all three in one loop turn
            batch = json.loads(await batching.receive_text())
            assert [p["data"] for p in batch] == [0, 1, 2]
            assert all(p["channel"] == "room" for p in batch)
        else:  # through Redis they may arrive in different turns: order is what holds
            assert [(await batching.receive()).data for _ in range(3)] == [0, 1, 2]
        for n in range(3):
            assert json.loads(await plain.receive_text())["data"] == n
        await harness.server.broadcast(Room, "room", "tick", 3)
        assert (await batching.receive()).data == 3


async def test_the_batch_option_must_be_asked_for_explicitly(start: Start) -> None:
    harness = await start(listeners=[Room])
    async with harness.client() as client:
        await client.emit("channels:batch", {"enabled": "yes"})
        assert (await client.receive()).data == {"enabled": False}


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout_module, "FAN_OUT_CHUNK", 2)
    monkeypatch.setattr(fanout_module, "_FAN_OUT_MIN", 2)


async def fan_out_setup(count: int) -> tuple[SocketServer, list[SocketConnection], list[Any]]:
    server = SocketServer(MemoryBroker())
    await server.start()
    transports = [GatedTransport() for _ in range(count)]
    connections = []
    for n, transport in enumerate(transports):
        connection = SocketConnection(transport, id=str(n))
        connection.start()
        await server.add_connection(connection)
        await server.add_subscription(connection, subscription())
        connections.append(connection)
    return server, connections, transports


@pytest.mark.usefixtures("small_chunks")
async def test_a_large_fan_out_yields_between_chunks_and_keeps_order() -> None:
    server, _, transports = await fan_out_setup(5)
    await server.broadcast(Room, "room", "tick", "a")
    await server.broadcast(Room, "room", "tick", "b")
    served = sum(1 for t in transports if t.frames)
    assert served == 2  # the first chunk only, so far
    for transport in transports:
        frames = await transport.wait_for(2)
        assert [json.loads(f)["data"] for f in frames] == ["a", "b"]
    await server.stop(timeout=1)


async def test_chunks_shrink_when_one_takes_longer_than_a_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fanout_module, "FAN_OUT_CHUNK", 4)
    monkeypatch.setattr(fanout_module, "_FAN_OUT_MIN", 2)
    monkeypatch.setattr(fanout_module, "FAN_OUT_TURN", 0.0)  # every chunk takes too long
    server, _, transports = await fan_out_setup(9)
    await server.broadcast(Room, "room", "tick", "a")
    assert sum(1 for t in transports if t.frames) == 4  # the first chunk: as many as allowed
    for transport in transports:
        await transport.wait_for(1)
    await server.broadcast(Room, "room", "tick", "b")
    assert sum(1 for t in transports if len(t.frames) == 2) == 2  # now: as few as allowed
    for transport in transports:
        frames = await transport.wait_for(2)
        assert [json.loads(f)["data"] for f in frames] == ["a", "b"]
    await server.stop(timeout=1)


@pytest.mark.usefixtures("small_chunks")
async def test_a_connection_that_unsubscribes_mid_fan_out_is_not_sent_the_event() -> None:
    server, connections, transports = await fan_out_setup(5)
    await server.broadcast(Room, "room", "tick", "a")
    late = next(n for n, t in enumerate(transports) if not t.frames)  # not in the first chunk
    await server.remove_subscription(connections[late], "room")
    await server.broadcast(Room, "room", "tick", "b")  # fan-outs run in order: "a" is done
    for n, transport in enumerate(transports):
        if n != late:
            assert [json.loads(f)["data"] for f in await transport.wait_for(2)] == ["a", "b"]
    assert transports[late].frames == []
    await server.stop(timeout=1)


@pytest.mark.usefixtures("small_chunks")
async def test_a_publisher_that_outruns_the_fan_out_waits() -> None:
    server, _, transports = await fan_out_setup(4)
    for n in range(100):
        await server.broadcast(Room, "room", "tick", n)
    for transport in transports:
        frames = await transport.wait_for(100)
        assert [json.loads(f)["data"] for f in frames] == list(range(100))
    await server.stop(timeout=1)


async def test_context_variables_set_around_send_stay_in_the_send() -> None:
    """An ASGI middleware that sets a context variable around ``send`` (tracing does) must not
    leak it into the broadcaster, nor fail when a suspended send is resumed later."""
    import contextvars

    from fastapi_channels import SocketConnection

    span: contextvars.ContextVar[str] = contextvars.ContextVar("span", default="none")
    gate = asyncio.Event()
    sent: list[str] = []

    class TracingTransport:
        async def send_text(self, text: str) -> None:
            token = span.set("send")
            try:
                if text == "slow":
                    await gate.wait()
                sent.append(text)
            finally:
                span.reset(token)  # raises if resumed in another context

        async def close(self, code: int, reason: str) -> None:
            return None

    connection = SocketConnection(TracingTransport(), id="c")
    connection.start()
    connection.push("fast")
    assert span.get() == "none"
    connection.push("slow")
    connection.push("after")
    assert span.get() == "none"
    writer = connection._writer
    assert writer is not None  # the slow send is pending in the writer task
    gate.set()
    async with asyncio.timeout(2):
        await writer
    assert sent == ["fast", "slow", "after"]
    assert connection.is_open
