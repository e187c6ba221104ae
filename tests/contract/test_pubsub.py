"""The contract, part one: pub/sub, what the server relies on of every broker.

Delivery to this process and to the others, each message once; publish order per publisher and
topic; interest counted in the base class, one engine subscription per topic; ``subscribe``
returning once messages will arrive; the state through ``start`` and ``stop``; bytes unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from fastapi_channels.brokers.base import BrokerState
from fastapi_channels.wire.errors import BrokerError
from tests.contract.conftest import TIMEOUT, Deployment, Node, fence

EngineCall = Callable[[str], Awaitable[None]]


def spy(monkeypatch: pytest.MonkeyPatch, node: Node) -> list[tuple[str, str]]:
    """Record the engine's ``_subscribe`` and ``_unsubscribe`` calls, as (kind, topic)."""
    calls: list[tuple[str, str]] = []
    for kind in ("subscribe", "unsubscribe"):
        real: EngineCall = getattr(node.broker, f"_{kind}")

        def recording(topic: str, kind: str = kind, real: EngineCall = real) -> Awaitable[None]:
            calls.append((kind, topic))
            return real(topic)

        monkeypatch.setattr(node.broker, f"_{kind}", recording)
    return calls


class Gate:
    """Holds the engine's ``_subscribe`` until `open`, to see who waits for it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, node: Node, fail: bool = False) -> None:
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()
        self.calls: list[str] = []
        real: EngineCall = node.broker._subscribe

        async def held(topic: str) -> None:
            self.calls.append(topic)
            self.entered.set()
            await self.opened.wait()
            if fail:
                raise BrokerError("the transport refused the subscription")
            await real(topic)

        monkeypatch.setattr(node.broker, "_subscribe", held)

    async def wait_entered(self) -> None:
        async with asyncio.timeout(TIMEOUT):
            await self.entered.wait()


async def test_a_message_reaches_this_process_once(deployment: Deployment) -> None:
    a, b = await deployment.start(), await deployment.start()
    await a.broker.subscribe("chat")
    await a.broker.publish("chat", b"hello")
    assert await a.inbox.get() == ("chat", b"hello", None)
    await fence(b, a)  # from another process: an echo of "hello" would come before it
    a.inbox.assert_empty()


async def test_a_message_reaches_every_other_process_once(deployment: Deployment) -> None:
    a, b, c = [await deployment.start() for _ in range(3)]
    for node in (a, b, c):
        await node.broker.subscribe("news")
    await a.broker.publish("news", b"from a")
    await b.broker.publish("news", b"from b")
    for node in (a, b, c):
        assert sorted(await node.inbox.take(2)) == [
            ("news", b"from a", None),
            ("news", b"from b", None),
        ]
    await fence(a, b, c)
    await fence(b, a, c)
    for node in (a, b, c):
        node.inbox.assert_empty()


async def test_only_topics_with_interest_are_delivered(deployment: Deployment) -> None:
    a, b = await deployment.start(), await deployment.start()
    await a.broker.subscribe("wanted")
    for publisher in (a, b):
        await publisher.broker.publish("unwanted", b"no")
        await publisher.broker.publish("wanted", b"yes")
    assert await a.inbox.take(2) == [("wanted", b"yes", None)] * 2
    await fence(b, a)
    a.inbox.assert_empty()
    b.inbox.assert_empty()


async def test_each_publisher_s_messages_arrive_in_publish_order(deployment: Deployment) -> None:
    nodes = [await deployment.start() for _ in range(3)]
    publishers = {"a": nodes[0], "b": nodes[1]}
    topics = ("one", "two")
    for node in nodes:
        for topic in topics:
            await node.broker.subscribe(topic)
    sent = [
        (name, topic, f"{name}{n}".encode())
        for n in range(500)
        for name in publishers
        for topic in topics
    ]
    # Started in this order, interleaved, without waiting for each other.
    await asyncio.gather(*(publishers[name].broker.publish(t, data) for name, t, data in sent))
    for node in nodes:
        received = await node.inbox.take(len(sent))
        for name in publishers:
            for topic in topics:
                expected = [d for p, t, d in sent if p == name and t == topic]
                got = [d for t, d, _ in received if t == topic and d.startswith(name.encode())]
                assert got == expected, (name, topic)


async def test_interest_is_counted_with_one_engine_subscription_per_topic(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await deployment.start(), await deployment.start()
    calls = spy(monkeypatch, a)
    for _ in range(3):
        await a.broker.subscribe("room")
    await a.broker.subscribe("hall")
    assert calls == [("subscribe", "room"), ("subscribe", "hall")]
    assert a.broker.topics == {"room", "hall"}
    assert a.broker.health().topics == 2

    for _ in range(2):
        await a.broker.unsubscribe("room")
    assert a.broker.topics == {"room", "hall"}
    await b.broker.publish("room", b"still wanted")
    assert await a.inbox.get() == ("room", b"still wanted", None)

    await a.broker.unsubscribe("room")
    await a.broker.unsubscribe("never subscribed")  # no interest: nothing to undo
    assert calls[2:] == [("unsubscribe", "room")]
    assert a.broker.topics == {"hall"}
    await a.broker.publish("room", b"nobody here")
    await b.broker.publish("room", b"nobody there")
    await fence(b, a)
    a.inbox.assert_empty()

    calls.clear()
    await a.broker.subscribe("room")  # interest from zero again: a new subscription
    assert calls == [("subscribe", "room")]
    await b.broker.publish("room", b"back")
    assert await a.inbox.get() == ("room", b"back", None)


async def test_subscribe_returns_once_messages_will_be_delivered(deployment: Deployment) -> None:
    a, b = await deployment.start(), await deployment.start()
    topics = [f"new:{n}" for n in range(20)]
    for topic in topics:
        await a.broker.subscribe(topic)
        await b.broker.publish(topic, topic.encode())  # at once, from another process
    assert await a.inbox.take(len(topics)) == [(t, t.encode(), None) for t in topics]


async def test_concurrent_first_subscribers_share_one_subscription(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await deployment.start(), await deployment.start()
    gate = Gate(monkeypatch, a)
    waiters = [asyncio.create_task(a.broker.subscribe("busy")) for _ in range(10)]
    await gate.wait_entered()  # the first is in the engine; the nine others came meanwhile
    assert not any(waiter.done() for waiter in waiters)  # none returns before it is made
    gate.opened.set()
    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(*waiters)
    assert gate.calls == ["busy"]
    await b.broker.publish("busy", b"once")
    assert await a.inbox.get() == ("busy", b"once", None)

    calls = spy(monkeypatch, a)
    for _ in range(9):  # ten units of interest were counted
        await a.broker.unsubscribe("busy")
    assert calls == [] and a.broker.topics == {"busy"}
    await a.broker.unsubscribe("busy")
    assert calls == [("unsubscribe", "busy")] and a.broker.topics == frozenset()
    await fence(b, a)
    a.inbox.assert_empty()


async def test_a_failed_subscription_keeps_no_interest(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await deployment.start()
    gate = Gate(monkeypatch, a, fail=True)
    waiters = [asyncio.create_task(a.broker.subscribe("refused")) for _ in range(3)]
    await gate.wait_entered()
    gate.opened.set()
    async with asyncio.timeout(TIMEOUT):
        results = await asyncio.gather(*waiters, return_exceptions=True)
    assert [type(result) for result in results] == [BrokerError] * 3
    assert gate.calls == ["refused"]
    # Every caller was told it is not subscribed, so no interest may be left behind: the
    # next subscriber must get a subscription of its own.
    assert a.broker.topics == frozenset()
    monkeypatch.undo()
    await a.broker.subscribe("refused")
    await a.broker.publish("refused", b"now")
    assert await a.inbox.get() == ("refused", b"now", None)


async def test_a_cancelled_subscriber_keeps_no_interest(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await deployment.start(), await deployment.start()
    gate = Gate(monkeypatch, a)
    first = asyncio.create_task(a.broker.subscribe("busy"))
    gave_up = asyncio.create_task(a.broker.subscribe("busy"))
    await gate.wait_entered()
    gave_up.cancel()  # a caller waiting for the first one's subscription
    gate.opened.set()
    async with asyncio.timeout(TIMEOUT):
        await first
        with pytest.raises(asyncio.CancelledError):
            await gave_up
    calls = spy(monkeypatch, a)
    await a.broker.unsubscribe("busy")  # the one unit of interest left
    assert calls == [("unsubscribe", "busy")] and a.broker.topics == frozenset()
    await b.broker.publish("busy", b"nobody")
    await fence(b, a)
    a.inbox.assert_empty()


async def test_cancelling_the_first_subscriber_leaves_the_others_subscribed(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await deployment.start(), await deployment.start()
    gate = Gate(monkeypatch, a)
    first = asyncio.create_task(a.broker.subscribe("busy"))
    others = [asyncio.create_task(a.broker.subscribe("busy")) for _ in range(2)]
    await gate.wait_entered()
    first.cancel()  # the caller whose subscription the others wait for
    gate.opened.set()
    async with asyncio.timeout(TIMEOUT):
        results = await asyncio.gather(*others, return_exceptions=True)
    assert first.cancelled()
    assert results == [None, None]  # they were not cancelled, and are subscribed
    await b.broker.publish("busy", b"for the others")
    assert await a.inbox.get() == ("busy", b"for the others", None)
    calls = spy(monkeypatch, a)
    for _ in range(2):
        await a.broker.unsubscribe("busy")
    assert calls == [("unsubscribe", "busy")] and a.broker.topics == frozenset()


async def test_the_state_follows_start_and_stop(deployment: Deployment) -> None:
    broker = deployment.make()
    assert broker.state is BrokerState.STOPPED
    assert not broker.healthy and broker.health().state is BrokerState.STOPPED
    node = await deployment.start(broker)
    assert broker.state in (BrokerState.CONNECTING, BrokerState.CONNECTED)
    async with asyncio.timeout(TIMEOUT):  # its transport (if any) is up in this suite
        assert await broker.wait_for_state(BrokerState.CONNECTED) is BrokerState.CONNECTED
    await node.broker.subscribe("a")
    health = broker.health()
    assert health.healthy and broker.healthy
    assert health.as_dict() == {
        "broker": broker.name,
        "state": "connected",
        "healthy": True,
        "topics": 1,
        "last_error": None,
        "changed_at": health.changed_at,
    }
    assert all(isinstance(value, int) for value in broker.counters().values())

    await broker.stop()
    assert broker.state is BrokerState.STOPPED
    assert not broker.healthy and broker.health().state is BrokerState.STOPPED
    assert broker.health().changed_at >= health.changed_at
    async with asyncio.timeout(TIMEOUT):
        assert await broker.wait_for_state(BrokerState.STOPPED) is BrokerState.STOPPED


async def test_stop_forgets_interest(deployment: Deployment) -> None:
    a, b = await deployment.start(), await deployment.start()
    for topic in ("x", "y", "x"):
        await a.broker.subscribe(topic)
    await a.broker.stop()
    assert a.broker.topics == frozenset() and a.broker.health().topics == 0
    await b.broker.publish("x", b"to a stopped process")

    # Started again, it has no interest left from before, and delivers to its new handler.
    before = a.inbox
    again = await deployment.start(a.broker)
    await b.broker.publish("x", b"no interest since the restart")
    await fence(b, again)
    again.inbox.assert_empty()
    await again.broker.subscribe("x")
    await b.broker.publish("x", b"wanted again")
    assert await again.inbox.get() == ("x", b"wanted again", None)
    before.assert_empty()


async def test_bytes_pass_unchanged(deployment: Deployment) -> None:
    a, b = await deployment.start(), await deployment.start()
    topic = "bytes:ünïcödé ☕"
    payloads = [bytes(range(256)), b"", bytes(range(256)) * 4096, bytes(range(255, -1, -1))]
    for node in (a, b):
        await node.broker.subscribe(topic)
    for data in payloads:  # one at a time
        await a.broker.publish(topic, data)
    await asyncio.gather(*(a.broker.publish(topic, data) for data in payloads))  # at once
    expected = [(topic, data, None) for data in payloads] * 2
    for node in (a, b):
        assert await node.inbox.take(len(expected)) == expected
