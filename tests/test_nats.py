"""What the NATS broker adds to the contract: any topic name, its URL, and NATS going away.

The shared contract (``tests/contract/``) runs on it too; these tests cover what is NATS's own:
topics that are no valid subject, the URL and the extra, an outage of the server (publishes
fail at once, the state follows nats-py, history survives a restart, presence lost in one comes
back), a start while NATS is down, and a process cut off from NATS catching its history channels
up.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

import nats
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.js.api import StreamConfig
from nats.js.errors import APIError, NotFoundError

from fastapi_channels import ChannelListener, History, channel
from fastapi_channels.brokers import create_broker
from fastapi_channels.brokers._nats_records import ensure_stream
from fastapi_channels.brokers._nats_subjects import Subjects, decode_token, encode_token
from fastapi_channels.brokers.base import BrokerState
from fastapi_channels.brokers.nats import NatsBroker
from fastapi_channels.brokers.stores import Announcements, Position, Retention, StoredEntry
from fastapi_channels.testing import SocketTestClient, lifespan
from fastapi_channels.wire.errors import BrokerError, ConfigurationError, OutcomeUnknown
from tests.conftest import Harness
from tests.contract.conftest import Deployment, Inbox, fence
from tests.nats_support import NatsServer, nats_binary
from tests.proxy import tcp_proxy
from tests.redis_support import free_port
from tests.test_history import offsets, subscribe

if TYPE_CHECKING:
    from nats.js import JetStreamContext

TIMEOUT = 5.0
ODD = ["a.b", "*", ">", "a b", "", "x.*.>", "tab\there", "%41", "ünï ☕", "a%", "..", "\n"]
"""Topic names that are no valid NATS subject token, or look like an escape."""
KEEP = Retention(size=10, ttl=None, keep=60)
ANNOUNCE = Announcements(join=(b"+", b";"), leave=(b"-", b";"))
FAST = {"reconnect_wait": 0.05, "timeout": 2.0, "connect_timeout": 1.0}


@channel("feed:*")
class Feed(ChannelListener):
    history = History(size=5)


@given(st.text())
def test_every_topic_becomes_one_valid_token_and_back(topic: str) -> None:
    token = encode_token(topic)
    assert token and token.isascii() and token.isprintable()
    assert not set(token) & {".", "*", ">", " "}
    assert decode_token(token) == topic


def test_tokens_keep_plain_names_readable_and_never_collide() -> None:
    assert encode_token("room:42_a-b") == "room:42_a-b"
    assert encode_token("a.b") == "a%2Eb"
    assert encode_token("") == "%"
    tokens = {encode_token(topic) for topic in ODD}
    assert len(tokens) == len(ODD)
    for bad in ("%4", "%zz", "a%", "é"):
        with pytest.raises(ValueError):
            decode_token(bad)


async def test_odd_topic_names_travel_between_processes(nats_url: str, nats_prefix: str) -> None:
    deployment = Deployment(
        NatsBroker, lambda: NatsBroker(nats_url, prefix=nats_prefix, history_storage="memory")
    )
    try:
        a, b = await deployment.start(), await deployment.start()
        for topic in ODD:
            await a.broker.subscribe(topic)
        for topic in ODD:
            await b.broker.publish(topic, topic.encode())
        received = await a.inbox.take(len(ODD))
        assert received == [(topic, topic.encode(), None) for topic in ODD]
        await b.broker.publish("a*b", b"no topic of a's")  # near names do not match
        position = await b.history.publish_stored("a.b", b"kept", KEEP)
        assert await a.inbox.get() == ("a.b", b"kept", position)
        stored = await a.history.read_stored("a.b", KEEP)
        assert stored.entries == [StoredEntry(1, b"kept")]
        assert (await a.history.read_stored("a*b", KEEP)).top == 0
    finally:
        await deployment.stop()


async def test_processes_starting_together_all_get_the_stream(
    nats_url: str, nats_prefix: str
) -> None:
    """Eight processes create one history stream at once: every one of them can store in it."""
    deployment = Deployment(
        NatsBroker, lambda: NatsBroker(nats_url, prefix=nats_prefix, history_storage="memory")
    )
    try:
        nodes = [await deployment.start() for _ in range(8)]
        sent = await asyncio.gather(
            *(n.history.publish_stored("c:x", b"%d" % i, KEEP) for i, n in enumerate(nodes))
        )
        assert sorted(p.offset for p in sent) == list(range(1, 9))
    finally:
        await deployment.stop()


class _HalfMadeStream:
    """JetStream as a concurrent creation leaves it: the first create says the subjects overlap
    (the other process's stream is not registered yet), the first update finds no such stream."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def add_stream(self, config: StreamConfig) -> None:
        self.calls.append("add")
        if self.calls.count("add") == 1:
            raise APIError(code=400, err_code=10065, description="subjects overlap")

    async def update_stream(self, config: StreamConfig) -> None:
        self.calls.append("update")
        raise NotFoundError(code=404, err_code=10059, description="stream not found")


async def test_a_stream_half_made_by_another_process_is_created_on_a_second_try() -> None:
    js = _HalfMadeStream()
    await ensure_stream(cast("JetStreamContext", js), StreamConfig(name="s", subjects=["s.*"]), "x")
    assert js.calls == ["add", "update", "add"]


async def test_a_foreign_stream_on_the_same_subjects_is_named_in_the_error(
    nats_url: str, nats_prefix: str
) -> None:
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        subjects = [f"{nats_prefix}-foreign.>"]
        await js.add_stream(StreamConfig(name=f"{nats_prefix}-foreign", subjects=subjects))
        try:
            mine = StreamConfig(name=f"{nats_prefix}-mine", subjects=[f"{nats_prefix}-foreign.s.*"])
            with pytest.raises(BrokerError, match="another stream already takes its subjects"):
                await ensure_stream(js, mine, "the history stream")
        finally:
            await js.delete_stream(f"{nats_prefix}-foreign")
    finally:
        await client.close()


def test_a_url_names_the_broker_its_servers_and_its_prefix() -> None:
    broker = create_broker("nats://127.0.0.1:4222?prefix=shop.eu")
    assert isinstance(broker, NatsBroker)
    assert broker.prefix == "shop.eu"
    assert broker.subject("a.b") == "shop.eu.m.a%2Eb"
    assert NatsBroker("nats://u:secret@h1:4222,h2:4223")._address == "nats://h1:4222,nats://h2:4223"
    for bad in ("nats://h:4222?prefix=a..b", "nats://h:4222?prefix=a*", "nats://h:4222?x=1"):
        with pytest.raises(ConfigurationError):
            create_broker(bad)
    with pytest.raises(ConfigurationError, match="two subject prefixes"):
        NatsBroker("nats://h:4222?prefix=a", prefix="b")
    assert Subjects("a.b").stream == "fastapi_channels_a_b"


def test_without_the_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "fastapi_channels.brokers.nats", raising=False)
    for name in [name for name in sys.modules if name == "nats" or name.startswith("nats.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if nats-py were not installed
    monkeypatch.setitem(sys.modules, "nats", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'fastapi-ws-channels\[nats\]'"):
        create_broker("nats://127.0.0.1:4222")


async def test_presence_lost_in_a_restart_reads_partial_until_every_process_registered_again(
    nats_server: Callable[[], NatsServer],
) -> None:
    server = nats_server()
    make = lambda: NatsBroker(server.url, prefix="members", **FAST)  # noqa: E731
    deployment = Deployment(NatsBroker, make)
    try:
        a, b = await deployment.start(), await deployment.start()
        for node in (a, b):
            await node.broker.subscribe("p:x")
            assert await node.presence.presence_renew(30) is False
        await a.presence.presence_update("p:x", {"ann": b"A"}, [], ANNOUNCE)
        assert await b.inbox.get() == ("p:x", b"+A;", None)

        server.stop()  # presence is kept in memory: the restart loses it
        async with asyncio.timeout(TIMEOUT):
            await a.broker.wait_for_state(BrokerState.RECONNECTING)
        with pytest.raises(BrokerError, match="unreachable"):
            await a.presence.presence_renew(30, was_alive=True)
        server.start()
        async with asyncio.timeout(TIMEOUT):
            for node in (a, b):
                await node.broker.wait_for_state(BrokerState.CONNECTED)

        assert await b.presence.presence_renew(30, was_alive=True) is False  # finds the loss
        assert (await b.presence.presence_snapshot("p:x", ANNOUNCE)).members == {}
        assert await a.presence.presence_renew(30, was_alive=True) is False
        await a.presence.presence_sync("p:x", {"ann": b"A"}, ANNOUNCE)
        assert await b.inbox.get() == ("p:x", b"+A;", None)  # a join again, never a leave
        found = await b.presence.presence_snapshot("p:x", ANNOUNCE)
        assert found.members == {"ann": b"A"} and found.partial and found.registered
    finally:
        await deployment.stop()


@pytest.mark.parametrize("retention", [None, KEEP], ids=["plain", "stored"])
async def test_a_stalled_publish_once_is_outcome_unknown_and_its_retry_delivers_once(
    nats_url: str, nats_prefix: str, retention: Retention | None
) -> None:
    port = urlsplit(nats_url).port
    assert port is not None
    async with tcp_proxy(port) as proxy:
        stalled = NatsBroker(
            f"nats://127.0.0.1:{proxy.port}", prefix=nats_prefix, history_storage="memory", **FAST
        )
        direct = NatsBroker(nats_url, prefix=nats_prefix, history_storage="memory")
        deployment = Deployment(NatsBroker, lambda: direct)
        try:
            a, b = await deployment.start(stalled), await deployment.start(direct)
            await b.broker.subscribe("c:x")
            assert not (await stalled.publish_once("c:x", b"warm", "w", 60, retention)).duplicate
            assert (await b.inbox.get())[1] == b"warm"
            proxy.hold()  # NATS takes what a sends, but its answers do not come back
            with pytest.raises(OutcomeUnknown):
                await stalled.publish_once("c:x", b"hi", "k", 60, retention)
            proxy.release()
            await stalled.publish_once("c:x", b"hi", "k", 60, retention)  # the retry
            again = await direct.publish_once("c:x", b"hi", "k", 60, retention)
            assert again.duplicate
            topic, data, position = await b.inbox.get()
            assert (topic, data, position) == ("c:x", b"hi", again.position)
            await fence(a, b)  # and never a second time
        finally:
            await deployment.stop()


async def test_an_outage_fails_publishes_at_once_and_history_survives_a_restart(
    nats_server: Callable[[], NatsServer],
) -> None:
    server = nats_server()
    make = lambda: NatsBroker(server.url, prefix="outage", **FAST)  # noqa: E731
    deployment = Deployment(NatsBroker, make)
    try:
        a, b = await deployment.start(), await deployment.start()
        for node in (a, b):
            await node.broker.subscribe("room")
        first = await a.history.publish_stored("room", b"before", KEEP)
        for node in (a, b):
            assert await node.inbox.get() == ("room", b"before", first)

        server.stop()
        async with asyncio.timeout(TIMEOUT):
            await a.broker.wait_for_state(BrokerState.RECONNECTING)
        assert not a.broker.healthy and a.broker.health().last_error
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(BrokerError, match="this process's subscribers only"):
            await a.broker.publish("room", b"during")
        with pytest.raises(BrokerError, match="neither stored nor sent"):
            await a.history.publish_stored("room", b"lost", KEEP)
        assert loop.time() - began < 1.0  # at once, not after a timeout
        assert await a.inbox.get() == ("room", b"during", None)  # local delivery goes on

        server.start()
        async with asyncio.timeout(TIMEOUT):
            for node in (a, b):
                await node.broker.wait_for_state(BrokerState.CONNECTED)
        await b.broker.publish("room", b"after")
        assert await a.inbox.get() == ("room", b"after", None)
        assert (await a.history.publish_stored("room", b"next", KEEP)) == Position(2, first.epoch)
        stored = await b.history.read_stored("room", KEEP)
        assert stored.entries == [StoredEntry(1, b"before"), StoredEntry(2, b"next")]
        assert a.broker.counters()["reconnects"] == 1
    finally:
        await deployment.stop()


async def test_a_broker_started_while_nats_is_down_connects_when_it_comes(
    nats_server: Callable[[], NatsServer],
) -> None:
    binary = nats_binary()
    assert binary is not None
    server = NatsServer(binary)
    server.port = free_port()
    broker = NatsBroker(server.url, prefix="late", **FAST)
    inbox = Inbox()
    try:
        await broker.start(inbox.plain)
        assert broker.state is BrokerState.CONNECTING
        await broker.subscribe("room")
        with pytest.raises(BrokerError):
            await broker.publish("room", b"alone")
        assert await inbox.get() == ("room", b"alone", None)
        server.start()
        async with asyncio.timeout(TIMEOUT):
            await broker.wait_for_state(BrokerState.CONNECTED)
        other = NatsBroker(server.url, prefix="late")
        await other.start(lambda topic, data: None)
        await other.publish("room", b"from another")
        assert await inbox.get() == ("room", b"from another", None)
        await other.stop()
    finally:
        await broker.stop()
        server.close()


async def test_a_process_cut_off_from_nats_catches_its_history_channels_up(
    nats_url: str, nats_prefix: str
) -> None:
    """What other processes published while this one was cut off from NATS is replayed."""
    # While the proxy is down it accepts connections and cuts them at once; nats-py leaves the
    # socket of such a failed attempt to the garbage collector, which warns when it closes it.
    # Collected here, so that the warning is not raised in whichever test runs next.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "unclosed <StreamWriter", ResourceWarning)
        try:
            await cut_off_and_back(nats_url, nats_prefix)
        finally:
            gc.collect()


async def cut_off_and_back(nats_url: str, nats_prefix: str) -> None:
    options = {"prefix": nats_prefix, "history_storage": "memory", **FAST}
    async with tcp_proxy(urlsplit(nats_url).port or 4222) as proxy:
        cut_off = NatsBroker(f"nats://127.0.0.1:{proxy.port}", **options)
        a = Harness.build(listeners=[Feed], broker=cut_off)
        b = Harness.build(listeners=[Feed], broker=NatsBroker(nats_url, **options))
        async with (
            lifespan(a.app),
            lifespan(b.app),
            SocketTestClient(a.app, query_string="user=ann") as ann,
        ):
            await subscribe(ann, "feed:o")
            await b.server.broadcast(Feed, "feed:o", "post", 0)
            assert await offsets(ann, 1) == [1]
            proxy.down = True
            proxy.drop()
            async with asyncio.timeout(TIMEOUT):
                await cut_off.wait_for_state(BrokerState.RECONNECTING)
            for n in range(1, 4):
                await b.server.broadcast(Feed, "feed:o", "post", n)
            filled = a.server.reconnects.filled
            proxy.down = False
            async with asyncio.timeout(TIMEOUT):
                await filled.wait()
            await b.server.broadcast(Feed, "feed:o", "post", 4)
            assert await offsets(ann, 4) == [2, 3, 4, 5]
            await ann.assert_no_message()
