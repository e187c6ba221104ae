"""The server's subscriptions against a broker whose subscriptions take time or fail."""

from __future__ import annotations

import asyncio

import pytest

from fastapi_channels import MemoryBroker, SocketConnection, SocketServer
from fastapi_channels.wire.errors import BrokerError
from tests import specs
from tests.test_connection_queue import GatedTransport


class SlowBroker(MemoryBroker):
    """Subscriptions wait until ``allow`` is set, then fail if ``fail`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.allow = asyncio.Event()
        self.fail = False
        self.asked: list[str] = []

    async def _subscribe(self, topic: str) -> None:
        self.asked.append(topic)
        await self.allow.wait()
        if self.fail:
            raise BrokerError("no subscription today")


async def started(broker: SlowBroker, count: int) -> tuple[SocketServer, list[SocketConnection]]:
    server = SocketServer(broker)
    await server.start()
    connections = []
    for n in range(count):
        connection = SocketConnection(GatedTransport(), id=str(n))
        connection.start()
        await server.add_connection(connection)
        connections.append(connection)
    return server, connections


async def test_a_second_subscriber_waits_for_the_subscription_being_made() -> None:
    broker = SlowBroker()
    server, (first, second) = await started(broker, 2)
    room = specs.spec("room")
    making = asyncio.create_task(server.add_subscription(first, specs.subscription("room", room)))
    joining = asyncio.create_task(server.add_subscription(second, specs.subscription("room", room)))
    await asyncio.wait({making, joining}, timeout=0.05)  # bounded: both must still be waiting
    assert not making.done() and not joining.done()
    assert broker.asked == ["c:room"]  # one subscription for both
    broker.allow.set()
    await asyncio.wait_for(asyncio.gather(making, joining), timeout=5)
    assert {c.id for c in server.subscribers("room")} == {"0", "1"}
    await server.stop(timeout=1)


async def test_a_failed_subscription_leaves_nothing_behind_for_anyone() -> None:
    broker = SlowBroker()
    broker.fail = True
    server, (first, second) = await started(broker, 2)
    room = specs.spec("room")
    attempts = [
        asyncio.create_task(server.add_subscription(c, specs.subscription("room", room)))
        for c in (first, second)
    ]
    broker.allow.set()
    for attempt in attempts:
        with pytest.raises(BrokerError):
            await asyncio.wait_for(attempt, timeout=5)
    assert server.subscribers("room") == []
    assert "c:room" not in broker.topics
    assert first.subscriptions == {} and second.subscriptions == {}
    # The channel can be subscribed again once the broker works.
    broker.fail = False
    await asyncio.wait_for(
        server.add_subscription(first, specs.subscription("room", room)), timeout=5
    )
    assert [c.id for c in server.subscribers("room")] == ["0"]
    await server.stop(timeout=1)


async def test_a_second_connection_of_a_user_waits_for_the_users_topic() -> None:
    broker = SlowBroker()
    server = SocketServer(broker)
    await server.start()
    first = SocketConnection(GatedTransport(), id="a", user_key="ann")
    second = SocketConnection(GatedTransport(), id="b", user_key="ann")
    opening = [asyncio.create_task(server.add_connection(c)) for c in (first, second)]
    await asyncio.wait(opening, timeout=0.05)
    assert not any(task.done() for task in opening)
    assert broker.asked == ["u:ann"]
    broker.allow.set()
    await asyncio.wait_for(asyncio.gather(*opening), timeout=5)
    assert server.count_of("ann") == 2
    await server.remove_connection(first)
    assert "u:ann" in broker.topics  # the second connection still wants it
    await server.remove_connection(second)
    assert "u:ann" not in broker.topics
    await server.stop(timeout=1)
