"""History channels, on both brokers: positions, recovery after a reconnect, limits, order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI

from fastapi_channels import (
    DROP,
    Broker,
    ChannelListener,
    Channels,
    ConfigurationError,
    History,
    HistoryFull,
    InvalidChannel,
    Position,
    ReplyError,
    SocketConnection,
    channel,
)
from fastapi_channels.brokers.base import BrokerState
from fastapi_channels.brokers.redis import RedisBroker
from fastapi_channels.testing import ReceivedPacket, SocketTestClient, lifespan
from tests.conftest import Harness, Start, eventually
from tests.proxy import tcp_proxy

TIMEOUT = 5.0


@channel("feed:*")
class Feed(ChannelListener):
    history = History(size=5)

    @channel.on("post")
    async def post(self, connection: SocketConnection, user: Any, packet: Any) -> Any:
        position = await self.broadcast(self.channel_name, "post", packet.data)
        assert position is not None
        return {"offset": position.offset}


@channel("news:*")
class News(ChannelListener):
    history = History(size=100, ttl=0.4, keep=60)


@channel("secret:*")
class Secret(ChannelListener):
    """Hides odd numbers from everyone but "boss", even in what is replayed."""

    history = History(size=10)

    @channel.outgoing("n")
    def hide(self, connection: SocketConnection, event: str, data: Any) -> Any:
        if connection.user_key == "boss" or data % 2 == 0:
            return data
        return DROP if data % 3 else -data


@channel("plain:*")
class Plain(ChannelListener):
    pass


@channel("present:*")
class Present(ChannelListener):
    presence = True
    history = History(size=10)


LISTENERS = [Feed, News, Secret, Plain, Present]


def position(packet: ReceivedPacket) -> tuple[int, str]:
    value = packet["position"]
    return value["offset"], value["epoch"]


async def subscribe(
    client: SocketTestClient, name: str, since: dict[str, Any] | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {"channel": name}
    if since is not None:
        data["since"] = since
    await client.emit("subscribe-channel-request", data)
    async with asyncio.timeout(TIMEOUT):
        while True:
            packet = await client.receive(TIMEOUT)
            if packet.event == "subscribe-channel-response":
                response: dict[str, Any] = packet.data
                return response
            raise AssertionError(f"a packet before the response: {packet!r}")


async def offsets(client: SocketTestClient, count: int) -> list[int]:
    packets = [await client.receive(TIMEOUT) for _ in range(count)]
    return [position(p)[0] for p in packets]


async def test_broadcasts_carry_positions_from_one(start: Start) -> None:
    app = await start(listeners=LISTENERS)
    async with app.client("ann") as ann:
        response = await subscribe(ann, "feed:1")
        assert response["successful"] and "recovered" not in response
        epoch = response["position"]["epoch"]
        assert response["position"] == {"offset": 0, "epoch": epoch}
        sent = [await app.server.broadcast(Feed, "feed:1", "post", {"n": n}) for n in range(3)]
        assert sent == [Position(n, epoch) for n in (1, 2, 3)]
        for n in range(3):
            packet = await ann.receive(TIMEOUT)
            assert packet == {
                "event": "post",
                "channel": "feed:1",
                "data": {"n": n},
                "position": {"offset": n + 1, "epoch": epoch},
            }
        assert await ann.request("post", {"n": 3}, channel="feed:1") == {"offset": 4}
        assert position(await ann.receive(TIMEOUT)) == (4, epoch)
        # Another channel of the same listener has its own offsets (and epoch).
        other = await app.server.broadcast(Feed, "feed:2", "post", 0)
        assert other is not None and other.offset == 1


async def test_a_subscriber_recovers_what_it_missed_across_a_reconnect(start: Start) -> None:
    a = await start(listeners=LISTENERS)
    b = await start(listeners=LISTENERS)  # the client comes back on another process
    async with a.client("ann") as ann:
        epoch = (await subscribe(ann, "feed:r"))["position"]["epoch"]
        for n in range(2):
            await a.server.broadcast(Feed, "feed:r", "post", n)
        assert await offsets(ann, 2) == [1, 2]
    for n in range(2, 5):  # while ann is away
        await b.server.broadcast(Feed, "feed:r", "post", n)
    async with b.client("ann") as ann:
        since = {"offset": 2, "epoch": epoch}
        response = await subscribe(ann, "feed:r", since)
        assert response == {
            "channel": "feed:r",
            "successful": True,
            "position": since,
            "recovered": True,
        }
        missed = [await ann.receive(TIMEOUT) for _ in range(3)]
        assert [(p.data, position(p)) for p in missed] == [(n, (n + 1, epoch)) for n in (2, 3, 4)]
        await ann.assert_no_message()
        await a.server.broadcast(Feed, "feed:r", "post", 5)
        assert await offsets(ann, 1) == [6]


async def test_nothing_missed_recovers_with_nothing(start: Start) -> None:
    app = await start(listeners=LISTENERS)
    async with app.client("ann") as ann:
        epoch = (await subscribe(ann, "feed:n"))["position"]["epoch"]
    async with app.client("ann") as ann:
        response = await subscribe(ann, "feed:n", {"offset": 0, "epoch": epoch})
        assert response["recovered"] is True
        await ann.assert_no_message()


async def test_recovery_fails_when_the_gap_is_no_longer_kept(start: Start) -> None:
    app = await start(listeners=LISTENERS)
    for n in range(8):  # the history keeps the last 5: offsets 4 to 8
        await app.server.broadcast(Feed, "feed:g", "post", n)
    page = await app.server.history("feed:g")
    epoch = page.position.epoch
    assert [m.position.offset for m in page.messages] == [4, 5, 6, 7, 8]
    async with app.client("ann") as ann:
        response = await subscribe(ann, "feed:g", {"offset": 2, "epoch": epoch})
        assert response["recovered"] is False
        assert response["position"] == {"offset": 8, "epoch": epoch}
        await ann.assert_no_message()  # nothing is replayed: the app reloads its state
        await app.server.broadcast(Feed, "feed:g", "post", 8)
        assert await offsets(ann, 1) == [9]
    async with app.client("ann") as ann:  # from offset 3, what remains is exactly enough
        response = await subscribe(ann, "feed:g", {"offset": 4, "epoch": epoch})
        assert response["recovered"] is True
        assert await offsets(ann, 5) == [5, 6, 7, 8, 9]


async def test_recovery_fails_when_the_epoch_changed(start: Start) -> None:
    app = await start(listeners=LISTENERS)
    await app.server.broadcast(Feed, "feed:e", "post", 0)
    async with app.client("ann") as ann:
        response = await subscribe(ann, "feed:e", {"offset": 0, "epoch": "another"})
        assert response["recovered"] is False
        assert response["position"]["offset"] == 1
        assert response["position"]["epoch"] != "another"
        await ann.assert_no_message()
        response = await subscribe(ann, "feed:f", {"offset": 7, "epoch": "x"})
        assert response["recovered"] is False  # ahead of the channel: not this history


async def test_messages_expire_after_the_ttl(start: Start) -> None:
    app = await start(listeners=LISTENERS)
    first = await app.server.broadcast(News, "news:t", "story", 1)
    assert first is not None
    assert [m.data for m in (await app.server.history("news:t")).messages] == [1]

    async def expired() -> bool:
        return not (await app.server.history("news:t")).messages

    await eventually(expired)
    async with app.client("ann") as ann:
        response = await subscribe(ann, "news:t", {"offset": 0, "epoch": first.epoch})
        assert response["recovered"] is False
        assert response["position"] == {"offset": 1, "epoch": first.epoch}  # kept longer
        second = await app.server.broadcast(News, "news:t", "story", 2)
        assert second == Position(2, first.epoch)
        assert await offsets(ann, 1) == [2]


async def test_the_server_side_reads_history(start: Start) -> None:
    a = await start(listeners=LISTENERS)
    b = await start(listeners=LISTENERS)
    empty = await b.server.history("feed:h")
    assert empty.messages == [] and empty.position.offset == 0
    for n in range(4):
        await a.server.broadcast(Feed, "feed:h", "post", {"n": n})
    page = await b.server.history("feed:h")
    epoch = page.position.epoch
    assert page.position == Position(4, epoch) and page.recovered is None
    assert [(m.position.offset, m.event, m.data) for m in page.messages] == [
        (n + 1, "post", {"n": n}) for n in range(4)
    ]
    assert [m.data["n"] for m in (await b.server.history("feed:h", limit=2)).messages] == [2, 3]
    page = await b.server.history("feed:h", since=Position(1, epoch), limit=2)
    assert ([m.position.offset for m in page.messages], page.recovered) == ([2, 3], True)
    page = await b.server.history("feed:h", since=Position(1, "gone"), limit=2)
    assert ([m.position.offset for m in page.messages], page.recovered) == ([1, 2], False)
    assert empty.position.epoch == epoch  # reading gave the channel its epoch
    with pytest.raises(InvalidChannel):
        await a.server.history("plain:1")


async def test_order_holds_under_concurrent_publishing(start: Start) -> None:
    a = await start(listeners=LISTENERS)
    b = await start(listeners=LISTENERS)
    async with a.client("ann") as ann, b.client("bob") as bob:
        await subscribe(ann, "feed:o")
        await subscribe(bob, "feed:o")

        async def publish(app: Any, name: str) -> list[Position | None]:
            return [
                await app.server.broadcast(Feed, "feed:o", "post", f"{name}{n}") for n in range(40)
            ]

        results = await asyncio.gather(publish(a, "a"), publish(b, "b"), publish(a, "c"))
        sent = sorted(p.offset for run in results for p in run if p is not None)
        assert sent == list(range(1, 121))
        seen = [
            [(position(p)[0], p.data) for p in [await c.receive(TIMEOUT) for _ in range(120)]]
            for c in (ann, bob)
        ]
        assert seen[0] == seen[1]  # one order, everywhere
        assert [offset for offset, _ in seen[0]] == list(range(1, 121))
        for name in "abc":  # each publisher's messages in its own order
            mine = [data for _, data in seen[0] if data.startswith(name)]
            assert mine == [f"{name}{n}" for n in range(40)]


async def test_bursts_of_broadcasts_and_subscriptions_are_absorbed(start: Start) -> None:
    """More concurrent broadcasts and catch-ups than the store has connections: they queue."""
    app = await start(listeners=LISTENERS)
    sent = await asyncio.gather(
        *(app.server.broadcast(Feed, "feed:b", "post", n) for n in range(300))
    )
    assert sorted(p.offset for p in sent if p is not None) == list(range(1, 301))
    assert [p.offset for p in sent if p is not None] == list(range(1, 301))  # publish order
    clients = [app.client(f"u{n}") for n in range(150)]
    await asyncio.gather(*(c.expect_ready() for c in clients))
    since = {"offset": 298, "epoch": sent[0].epoch if sent[0] else ""}
    responses = await asyncio.gather(*(subscribe(c, "feed:b", since) for c in clients))
    assert all(r["recovered"] is True for r in responses)
    for client in clients:
        assert await offsets(client, 2) == [299, 300]
    await asyncio.gather(*(c.close() for c in clients))


async def test_live_messages_during_recovery_come_after_it_once(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await start(listeners=LISTENERS)
    for n in range(2):
        await app.server.broadcast(Feed, "feed:x", "post", n)
    epoch = (await app.server.history("feed:x")).position.epoch
    broker = app.server.broker
    reading, resume = asyncio.Event(), asyncio.Event()
    read = broker.read_stored

    async def slow_read(*args: Any, **options: Any) -> Any:
        reading.set()
        await resume.wait()  # the read is slow: messages are published meanwhile
        return await read(*args, **options)

    monkeypatch.setattr(broker, "read_stored", slow_read)
    async with app.client("ann") as ann, app.client("bob") as bob:
        resume.set()
        await subscribe(bob, "feed:x")  # reads too (the position); let it through
        reading.clear()
        resume.clear()
        await ann.emit(
            "subscribe-channel-request",
            {"channel": "feed:x", "since": {"offset": 1, "epoch": epoch}},
        )
        async with asyncio.timeout(TIMEOUT):
            await reading.wait()
        for n in range(2, 5):  # live while ann's read is in flight: in the history too
            await app.server.broadcast(Feed, "feed:x", "post", n)
        assert await offsets(bob, 3) == [3, 4, 5]
        resume.set()
        response = await ann.receive(TIMEOUT)
        assert response.event == "subscribe-channel-response"
        assert response.data["recovered"] is True
        await app.server.broadcast(Feed, "feed:x", "post", 5)
        assert await offsets(ann, 5) == [2, 3, 4, 5, 6]  # 3 to 5 once, though held and read
        await ann.assert_no_message()


async def test_replayed_messages_go_through_the_outgoing_filter(start: Start) -> None:
    app = await start(listeners=LISTENERS)
    async with app.client("eve") as eve:
        epoch = (await subscribe(eve, "secret:1"))["position"]["epoch"]
    for n in range(1, 7):
        await app.server.broadcast(Secret, "secret:1", "n", n)
    async with app.client("eve") as eve, app.client("boss") as boss:
        assert (await subscribe(eve, "secret:1", {"offset": 0, "epoch": epoch}))["recovered"]
        assert (await subscribe(boss, "secret:1", {"offset": 0, "epoch": epoch}))["recovered"]
        got = [await eve.receive(TIMEOUT) for _ in range(4)]
        assert [(p.data, position(p)[0]) for p in got] == [(2, 2), (-3, 3), (4, 4), (6, 6)]
        assert [p.data for p in [await boss.receive(TIMEOUT) for _ in range(6)]] == [
            1,
            2,
            3,
            4,
            5,
            6,
        ]
        await app.server.broadcast(Secret, "secret:1", "n", 9)
        packet = await eve.receive(TIMEOUT)
        assert (packet.data, position(packet)) == (-9, (7, epoch))  # re-encoded, position kept


async def test_a_plain_channel_does_no_history_work(start: Start) -> None:
    app = await start(listeners=[Feed, Plain])  # no presence listener: no renewals either
    broker = app.server.broker
    calls: list[str] = []
    for name in ("publish_stored", "read_stored", "presence_update", "presence_members"):
        original = getattr(broker, name)

        def spy(*args: Any, _name: str = name, _original: Any = original, **options: Any) -> Any:
            calls.append(_name)
            return _original(*args, **options)

        setattr(broker, name, spy)
    async with app.client("ann") as ann:
        response = await subscribe(ann, "plain:1", {"offset": 3, "epoch": "ignored"})
        assert response == {"channel": "plain:1", "successful": True}
        await app.server.broadcast(Plain, "plain:1", "x", 1)
        assert await ann.receive(TIMEOUT) == {"event": "x", "channel": "plain:1", "data": 1}
    assert calls == []
    assert app.server.presence_tracker.running is False


async def test_a_malformed_since_is_refused(start: Start) -> None:
    app = await start(listeners=LISTENERS)
    async with app.client("ann") as ann:
        for since in (
            {"offset": -1, "epoch": "e"},
            {"offset": 1},
            "3",
            {"offset": True, "epoch": "e"},
        ):
            response = await subscribe(ann, "feed:m", since)  # type: ignore[arg-type]
            assert response["successful"] is False
            assert response["reason"].startswith("since must be")
        assert ann.ready is not None


def process(broker: Broker) -> tuple[FastAPI, Channels]:
    """An app ("process") with its own Channels on ``broker``; run it with ``lifespan``."""
    harness = Harness.build(listeners=LISTENERS, broker=broker)
    return harness.app, harness.channels


async def test_positions_survive_a_process_restart(make_broker: Callable[[], Broker]) -> None:
    """A new process on the same Redis (or memory hub) continues the same positions."""
    app, channels = process(make_broker())
    async with lifespan(app), SocketTestClient(app, query_string="user=ann") as ann:
        epoch = (await subscribe(ann, "feed:p"))["position"]["epoch"]
        for n in range(3):
            await channels.server.broadcast(Feed, "feed:p", "post", n)
        assert await offsets(ann, 3) == [1, 2, 3]
    app, channels = process(make_broker())  # the old one is gone
    async with lifespan(app), SocketTestClient(app, query_string="user=ann") as ann:
        await channels.server.broadcast(Feed, "feed:p", "post", 3)
        response = await subscribe(ann, "feed:p", {"offset": 2, "epoch": epoch})
        assert response["recovered"] is True
        assert await offsets(ann, 2) == [3, 4]
        assert await channels.server.broadcast(Feed, "feed:p", "post", 4) == Position(5, epoch)
        # Without naming the listener, the channel's own history applies just the same.
        assert await channels.server.broadcast("feed:p", "post", 5) == Position(6, epoch)
        assert await offsets(ann, 2) == [5, 6]


@channel("dm:*")
class Direct(ChannelListener):
    """Sends ``data`` on to the channel ``dm:<data.to>``: names the client makes up."""

    history = History(size=10, max_channels=2)

    @channel.on("send")
    async def send(self, connection: SocketConnection, user: Any, packet: Any) -> None:
        await self.broadcast(f"dm:{packet.data['to']}", "said", packet.data)


async def test_a_full_history_answers_the_client_history_full(start: Start) -> None:
    app = await start(listeners=[Direct])
    async with app.client("ann") as ann:
        assert (await subscribe(ann, "dm:ann"))["position"]["offset"] == 0  # counts: one of two
        await ann.request("send", {"to": "bob"}, channel="dm:ann")
        with pytest.raises(ReplyError) as refused:
            await ann.request("send", {"to": "cy"}, channel="dm:ann")
        assert refused.value.code == "history-full"
        await ann.emit("send", {"to": "dan"}, channel="dm:ann")  # no id: an error packet
        error = await ann.receive(TIMEOUT)
        assert error.event == "channels:error" and error.data["code"] == "history-full"
        with pytest.raises(HistoryFull):
            await app.server.broadcast("dm:cy", "said", "from the server")
        assert await app.server.broadcast("dm:bob", "said", "still kept") == Position(
            2, (await app.server.history("dm:bob")).position.epoch
        )
        await app.server.broadcast(Direct, "dm:ann", "said", "hi")  # a channel that holds some
        assert (await ann.receive(TIMEOUT)).data == "hi"
        await ann.assert_no_message()


def test_history_declarations_are_checked() -> None:
    for bad in ({"max_channels": 0}, {"max_channels": True}, {"max_channels": 1.5}):
        with pytest.raises(ConfigurationError, match="max_channels"):
            History(**bad)  # type: ignore[arg-type]
    for bad in ({"size": 0}, {"ttl": 0}, {"ttl": 10, "keep": 5}, {"size": 1.5}):
        with pytest.raises(ConfigurationError):
            History(**bad)  # type: ignore[arg-type]

    class Wrong(ChannelListener):
        history = 10  # type: ignore[assignment]

    with pytest.raises(ConfigurationError, match="History"):
        Channels(listeners=[channel("wrong")(Wrong)])


@pytest.mark.parametrize("listener", [Feed, Present], ids=["history", "presence+history"])
async def test_a_process_that_lost_redis_catches_its_subscribers_up(
    redis_url: str, redis_prefix: str, listener: type[ChannelListener]
) -> None:
    """What other processes published while this one was cut off from Redis is replayed (after
    the member list, on a presence channel)."""
    name = listener.pattern.prefix + "o"
    fast = {"prefix": redis_prefix, "reconnect_delay": (0.02, 0.1), "timeout": 1.0}
    async with tcp_proxy(urlsplit(redis_url).port or 6379) as proxy:
        cut_off = RedisBroker(f"redis://127.0.0.1:{proxy.port}/0", **fast)
        (app_a, a), (app_b, b) = process(cut_off), process(RedisBroker(redis_url, **fast))
        async with (
            lifespan(app_a),
            lifespan(app_b),
            SocketTestClient(app_a, query_string="user=ann") as ann,
        ):
            await subscribe(ann, name)
            if listener.presence:
                assert (await ann.receive(TIMEOUT)).event == "channels:presence"
            await b.server.broadcast(listener, name, "post", 0)
            assert await offsets(ann, 1) == [1]
            proxy.down = True
            proxy.drop()
            async with asyncio.timeout(TIMEOUT):
                await cut_off.wait_for_state(BrokerState.RECONNECTING)
            for n in range(1, 4):
                await b.server.broadcast(listener, name, "post", n)
            filled = a.server.reconnects.filled
            proxy.down = False
            async with asyncio.timeout(TIMEOUT):
                await filled.wait()
            if listener.presence:
                members = await ann.receive(TIMEOUT)
                assert (members.event, members.data["members"]) == (
                    "channels:presence",
                    [{"id": "ann"}],
                )
            await b.server.broadcast(listener, name, "post", 4)
            assert await offsets(ann, 4) == [2, 3, 4, 5]
            await ann.assert_no_message()


class ReadRacedBroker(RedisBroker):
    """A Redis broker whose next ``read_stored`` first runs ``before_read``: a test lets a live
    stored message reach this process there, while its subscribers are being caught up."""

    before_read: Callable[[], Any] | None = None
    delivered: asyncio.Event

    def _deliver_stored(self, topic: str, data: bytes, position: Position) -> None:
        super()._deliver_stored(topic, data, position)
        self.delivered.set()

    async def read_stored(self, topic: str, retention: Any, after: int = 0) -> Any:
        hook, self.before_read = self.before_read, None
        if hook is not None:
            await hook()
        return await super().read_stored(topic, retention, after)


async def test_a_live_message_the_reconnect_catch_up_also_read_is_sent_once(
    redis_url: str, redis_prefix: str
) -> None:
    """A stored message that arrives while a reconnected process reads what its subscribers
    missed, and that the read returns too, reaches them once."""
    name = Feed.pattern.prefix + "race"
    fast = {"prefix": redis_prefix, "reconnect_delay": (0.02, 0.1), "timeout": 1.0}
    async with tcp_proxy(urlsplit(redis_url).port or 6379) as proxy:
        cut_off = ReadRacedBroker(f"redis://127.0.0.1:{proxy.port}/0", **fast)
        cut_off.delivered = asyncio.Event()
        (app_a, a), (app_b, b) = process(cut_off), process(RedisBroker(redis_url, **fast))
        async with (
            lifespan(app_a),
            lifespan(app_b),
            SocketTestClient(app_a, query_string="user=ann") as ann,
        ):
            await subscribe(ann, name)
            await b.server.broadcast(Feed, name, "post", 0)
            assert await offsets(ann, 1) == [1]
            proxy.down = True
            proxy.drop()
            async with asyncio.timeout(TIMEOUT):
                await cut_off.wait_for_state(BrokerState.RECONNECTING)
            await b.server.broadcast(Feed, name, "post", 1)

            async def publish_during_the_read() -> None:
                cut_off.delivered.clear()
                await b.server.broadcast(Feed, name, "post", 2)
                async with asyncio.timeout(TIMEOUT):
                    await cut_off.delivered.wait()  # held: ann is being caught up

            cut_off.before_read = publish_during_the_read
            filled = a.server.reconnects.filled
            proxy.down = False
            async with asyncio.timeout(TIMEOUT):
                await filled.wait()
            assert await offsets(ann, 2) == [2, 3]
            await ann.assert_no_message()
