"""What is specific to the Redis broker, and choosing a broker by URL.

What every broker must do (delivery, order, interest counting, state, bytes) is the contract
suite's, ``tests/contract``, run on every broker. Here: Redis between processes (its
subscriptions, batching, foreign messages), its faults, and ``create_broker``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

import pytest
import redis.asyncio as aioredis

from fastapi_channels.brokers import Broker, MemoryBroker, _frames, create_broker
from fastapi_channels.brokers.base import BrokerState
from fastapi_channels.brokers.redis import RedisBroker
from fastapi_channels.wire.errors import BrokerError, ConfigurationError
from tests.redis_support import RedisServer, free_port

TIMEOUT = 5.0
FAST = {"reconnect_delay": (0.02, 0.2), "ping_interval": 0.5, "timeout": 1.0}


class Inbox:
    """What a broker delivered, in order, with a timeout on every wait."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    def __call__(self, topic: str, data: bytes) -> None:
        self.queue.put_nowait((topic, data))

    async def get(self, within: float = TIMEOUT) -> tuple[str, bytes]:
        async with asyncio.timeout(within):
            return await self.queue.get()

    async def take(self, count: int, within: float = TIMEOUT) -> list[tuple[str, bytes]]:
        async with asyncio.timeout(within):
            return [await self.queue.get() for _ in range(count)]

    def assert_empty(self) -> None:
        assert self.queue.empty(), f"unexpected message {self.queue.get_nowait()!r}"


B = TypeVar("B", bound=Broker)


class Starter(Generic[B]):
    """Starts brokers made by ``make``, each with its inbox, and stops them all at the end."""

    def __init__(self, make: Callable[..., B]) -> None:
        self.make = make
        self.started: list[B] = []

    async def __call__(self, *args: Any, **options: Any) -> tuple[B, Inbox]:
        broker = self.make(*args, **options)
        inbox = Inbox()
        await broker.start(inbox)
        self.started.append(broker)
        return broker, inbox

    async def stop(self) -> None:
        for broker in self.started:
            await broker.stop()


@pytest.fixture
def make_redis_broker(redis_url: str, redis_prefix: str) -> Callable[..., RedisBroker]:
    """Make Redis brokers ("processes") sharing one prefix, on the shared server by default."""

    def make(url: str = redis_url, **options: Any) -> RedisBroker:
        return RedisBroker(url, prefix=redis_prefix, **{**FAST, **options})

    return make


@pytest.fixture
async def start_redis_broker(
    make_redis_broker: Callable[..., RedisBroker],
) -> AsyncIterator[Starter[RedisBroker]]:
    starter = Starter(make_redis_broker)
    yield starter
    await starter.stop()


async def fence(publisher: Broker, receivers: list[tuple[Broker, Inbox]]) -> None:
    """Publish a marker and wait for it everywhere: whatever the publisher sent before it has
    then been delivered, so what did not arrive will not."""
    for receiver, _ in receivers:
        await receiver.subscribe("fence")
    await publisher.publish("fence", b"")
    for receiver, inbox in receivers:
        assert await inbox.get() == ("fence", b"")
        await receiver.unsubscribe("fence")


# -- Redis between processes ----------------------------------------------------------------


async def test_redis_options_in_the_url_do_not_change_the_bytes(
    start_redis_broker: Starter[RedisBroker], redis_url: str
) -> None:
    a, inbox_a = await start_redis_broker(f"{redis_url}?decode_responses=true&protocol=3")
    b, inbox_b = await start_redis_broker()
    await a.subscribe("t")
    await b.subscribe("t")
    await a.publish("t", b"\xff binary")
    assert await inbox_b.get() == ("t", b"\xff binary")
    assert await inbox_a.get() == ("t", b"\xff binary")
    await b.publish("t", b"\xfe back")
    assert await inbox_a.get() == ("t", b"\xfe back")


async def test_a_process_receives_only_topics_it_has_interest_in(
    start_redis_broker: Starter[RedisBroker], redis_url: str
) -> None:
    a, _ = await start_redis_broker()
    b, inbox_b = await start_redis_broker()
    for _ in range(3):
        await b.subscribe("shared")
    async with aioredis.from_url(redis_url) as client:
        numsub = dict(await client.pubsub_numsub(b.channel("shared"), b.channel("other")))
        assert numsub == {b.channel("shared"): 1, b.channel("other"): 0}

        await a.publish("other", b"not for b")
        await fence(a, [(b, inbox_b)])
        inbox_b.assert_empty()
        assert b.stats.received == 1  # the fence only: Redis did not even send the other

        for _ in range(3):
            await b.unsubscribe("shared")
        assert dict(await client.pubsub_numsub(b.channel("shared"))) == {b.channel("shared"): 0}


async def test_publishes_are_batched_under_load(
    start_redis_broker: Starter[RedisBroker], redis_url: str
) -> None:
    a, _ = await start_redis_broker()
    b, inbox_b = await start_redis_broker()
    await b.subscribe("firehose")
    async with aioredis.from_url(redis_url) as client, client.pubsub() as raw:
        await raw.subscribe(a.channel("firehose"))
        assert (await raw.get_message(timeout=TIMEOUT))["type"] == "subscribe"

        count = 5000
        await asyncio.gather(*(a.publish("firehose", b"x" * 100) for _ in range(count)))
        await inbox_b.take(count)
        await a.publish("firehose", b"last")
        await inbox_b.get()

        redis_messages = 0
        while (await raw.get_message(timeout=TIMEOUT))["data"][-4:] != b"last":
            redis_messages += 1
    assert redis_messages < count / 10
    assert a.stats.published == count + 1
    assert a.stats.payloads_sent == redis_messages + 1


async def test_one_at_a_time_publishes_are_not_held_back(
    start_redis_broker: Starter[RedisBroker],
) -> None:
    a, _ = await start_redis_broker()
    b, inbox_b = await start_redis_broker()
    await b.subscribe("t")
    for i in range(20):
        await a.publish("t", str(i).encode())
        assert await inbox_b.get() == ("t", str(i).encode())
    assert a.stats.payloads_sent == 20


async def test_a_foreign_message_on_our_channel_is_dropped_and_logged(
    start_redis_broker: Starter[RedisBroker], redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = await start_redis_broker()
    b, inbox_b = await start_redis_broker()
    await b.subscribe("t")
    async with aioredis.from_url(redis_url) as client:
        await client.publish(b.channel("t"), b"not framed")
    await a.publish("t", b"fine")
    assert await inbox_b.get() == ("t", b"fine")
    assert b.stats.dropped == 1
    assert "dropped an undecodable message" in caplog.text


async def test_a_bug_in_the_reader_is_logged_and_the_broker_recovers(
    start_redis_broker: Starter[RedisBroker],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, inbox_a = await start_redis_broker()
    b, _ = await start_redis_broker()
    await a.subscribe("t")
    real_unpack = _frames.unpack

    def broken_once(payload: bytes) -> tuple[bytes, list[bytes]]:
        monkeypatch.setattr(_frames, "unpack", real_unpack)
        raise RuntimeError("a bug")

    monkeypatch.setattr(_frames, "unpack", broken_once)
    await b.publish("t", b"lost to the bug")
    async with asyncio.timeout(TIMEOUT):
        await a.wait_for_state(BrokerState.RECONNECTING)
        await a.wait_for_state(BrokerState.CONNECTED)
    assert "unexpected error in the Redis broker" in caplog.text
    await b.publish("t", b"after")
    assert await inbox_a.get() == ("t", b"after")


# -- Redis faults ---------------------------------------------------------------------------


async def test_survives_a_redis_restart(
    redis_server: Callable[[], RedisServer],
    start_redis_broker: Starter[RedisBroker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fastapi_channels.brokers.redis")
    server = redis_server()
    a, inbox_a = await start_redis_broker(server.url)
    b, inbox_b = await start_redis_broker(server.url)
    await a.subscribe("t")
    await b.subscribe("t")

    server.stop()
    async with asyncio.timeout(TIMEOUT):
        await a.wait_for_state(BrokerState.RECONNECTING)
        await b.wait_for_state(BrokerState.RECONNECTING)
    assert not a.healthy
    assert a.health().last_error

    # While Redis is away: local delivery goes on, publishing says what was not delivered.
    started = time.monotonic()
    with pytest.raises(BrokerError, match="this process's subscribers only"):
        await a.publish("t", b"local only")
    assert time.monotonic() - started < 0.5
    assert await inbox_a.get() == ("t", b"local only")
    await a.subscribe("new while down")

    server.start()
    async with asyncio.timeout(TIMEOUT):
        await a.wait_for_state(BrokerState.CONNECTED)
        await b.wait_for_state(BrokerState.CONNECTED)
    await b.publish("t", b"after restart")
    await b.publish("new while down", b"also")
    assert await inbox_a.get() == ("t", b"after restart")
    assert await inbox_a.get() == ("new while down", b"also")
    assert a.stats.reconnects == 1
    assert "lost the connection to Redis" in caplog.text
    assert re.search(
        r"connected to Redis at \S+ after [\d.]+ s; topics re-subscribed: 2", caplog.text
    )
    # What was published while Redis was away is not replayed to the other process.
    assert await inbox_b.get() == ("t", b"after restart")


async def test_thousands_of_topics_are_re_subscribed_after_a_restart(
    redis_server: Callable[[], RedisServer], start_redis_broker: Starter[RedisBroker]
) -> None:
    server = redis_server()
    a, inbox_a = await start_redis_broker(server.url)
    topics = [f"room:{i}" for i in range(2500)]
    await asyncio.gather(*(a.subscribe(topic) for topic in topics))
    server.stop()
    async with asyncio.timeout(TIMEOUT):
        await a.wait_for_state(BrokerState.RECONNECTING)
    server.start()
    async with asyncio.timeout(TIMEOUT):
        await a.wait_for_state(BrokerState.CONNECTED)

    b, _ = await start_redis_broker(server.url)
    for topic in (topics[0], topics[1500], topics[-1]):
        await b.publish(topic, b"x")
        assert await inbox_a.get() == (topic, b"x")


async def test_starts_while_redis_is_down_and_connects_later(
    redis_server: Callable[[], RedisServer], start_redis_broker: Starter[RedisBroker]
) -> None:
    server = redis_server()
    server.stop()
    # A long command timeout: connecting must not wait on it once Redis is back.
    a, inbox_a = await start_redis_broker(server.url, timeout=30)
    assert a.state is BrokerState.CONNECTING
    await a.subscribe("t")
    with pytest.raises(BrokerError):
        await a.publish("t", b"local")
    assert await inbox_a.get() == ("t", b"local")

    server.start()
    async with asyncio.timeout(2):
        await a.wait_for_state(BrokerState.CONNECTED)
    b, _ = await start_redis_broker(server.url)
    await b.publish("t", b"remote")
    assert await inbox_a.get() == ("t", b"remote")


async def test_a_frozen_redis_is_detected_and_publishes_time_out(
    redis_server: Callable[[], RedisServer], start_redis_broker: Starter[RedisBroker]
) -> None:
    server = redis_server()
    a, _ = await start_redis_broker(server.url, ping_interval=0.2, timeout=0.3)
    b, inbox_b = await start_redis_broker(server.url)
    await b.subscribe("t")

    server.pause()
    try:
        async with asyncio.timeout(2):  # no confirmation: it gives up after ``timeout``
            await a.subscribe("while frozen")
        with pytest.raises(BrokerError):
            async with asyncio.timeout(2):
                await a.publish("t", b"lost")
        async with asyncio.timeout(TIMEOUT):
            await a.wait_for_state(BrokerState.RECONNECTING)
    finally:
        server.resume()
    async with asyncio.timeout(TIMEOUT):
        await a.wait_for_state(BrokerState.CONNECTED)
    await a.publish("t", b"back")
    received = await inbox_b.get()
    if received == ("t", b"lost"):  # it was written before Redis froze, then delivered
        received = await inbox_b.get()
    assert received == ("t", b"back")


async def test_stop_fails_waiting_publishes_and_closes(
    start_redis_broker: Starter[RedisBroker],
) -> None:
    a, _ = await start_redis_broker()
    await a.stop()
    with pytest.raises(BrokerError):
        await a.publish("t", b"after stop")
    assert a.state is BrokerState.STOPPED


# -- choosing a broker ----------------------------------------------------------------------


@pytest.mark.parametrize("url", [None, "", "memory://"])
def test_create_broker_defaults_to_memory(url: str | None) -> None:
    assert isinstance(create_broker(url), MemoryBroker)


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://example.com:6380", "unix:///tmp/redis.sock"]
)
def test_create_broker_chooses_redis_by_url(url: str) -> None:
    assert isinstance(create_broker(url), RedisBroker)


def test_create_broker_rejects_an_unknown_scheme() -> None:
    with pytest.raises(ConfigurationError, match="unknown broker URL scheme 'kafka'"):
        create_broker("kafka://localhost")


def test_a_missing_redis_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name == "redis" or name.startswith(("redis.", "fastapi_channels.brokers.redis")):
            monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigurationError, match=r"pip install 'fastapi-ws-channels\[redis\]'"):
        create_broker("redis://127.0.0.1:6379/0")


def test_the_prefix_can_come_from_the_url() -> None:
    broker = RedisBroker("redis://127.0.0.1:6379/0?prefix=shop&socket_timeout=3")
    assert broker.prefix == "shop"
    assert broker.channel("user:1") == b"shop:user:1"
    assert RedisBroker("redis://127.0.0.1:6379/0").prefix == "fastapi_channels"
    with pytest.raises(ConfigurationError, match="two channel prefixes"):
        RedisBroker("redis://127.0.0.1:6379/0?prefix=shop", prefix="blog")


def test_a_bad_option_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        RedisBroker("redis://127.0.0.1:6379/0?no_such_option=1")


def test_free_port_helper_gives_a_bindable_port() -> None:
    assert 0 < free_port() < 65536
