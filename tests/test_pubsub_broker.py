"""A pub/sub-only broker under a whole app: plain channels work, history and presence are refused.

The broker is the fifty-line engine of ``tests/pubsub_broker.py``; the contract suite
(``tests/contract``) tests it on its own. Two apps sharing one `PubSubNetwork` are two processes
of one deployment.
"""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from fastapi_channels import ChannelListener, Channels, History, channel
from fastapi_channels.brokers import HistoryStore, PresenceStore
from fastapi_channels.testing import lifespan
from fastapi_channels.wire.errors import ConfigurationError
from tests.conftest import Harness
from tests.pubsub_broker import PubSubBroker, PubSubNetwork


class Message(BaseModel):
    text: str


@channel("room.*")
class Room(ChannelListener):
    @channel.on("message")
    async def message(self, message: Message) -> None:
        await self.broadcast(self.channel_name, "message", {"text": message.text})


@channel("log.*")
class Log(ChannelListener):
    history = History(size=10)


@channel("lobby.*")
class Lobby(ChannelListener):
    presence = True


def test_a_pubsub_broker_is_neither_store() -> None:
    broker = PubSubBroker()
    assert not isinstance(broker, HistoryStore)
    assert not isinstance(broker, PresenceStore)


async def test_plain_channels_work_across_processes() -> None:
    network = PubSubNetwork()
    one = Harness.build(listeners=[Room], broker=PubSubBroker(network))
    two = Harness.build(listeners=[Room], broker=PubSubBroker(network))
    async with (
        lifespan(one.app),
        lifespan(two.app),
        one.client("ann") as ann,
        two.client("bob") as bob,
        two.client("eve") as eve,
    ):
        for client in (ann, bob):
            assert (await client.subscribe("room.lobby"))["successful"]
        assert (await eve.subscribe("room.games"))["successful"]

        await ann.emit("message", {"text": "hello"}, channel="room.lobby")
        for client in (ann, bob):
            packet = await client.receive()
            assert (packet.event, packet.channel) == ("message", "room.lobby")
            assert packet.data == {"text": "hello"}

        await one.server.broadcast("room.games", "notice", {"from": "one"})
        assert (await eve.receive()).data == {"from": "one"}
        await one.server.send_to_user("bob", "direct", "to bob")
        assert (await bob.receive()).data == "to bob"

        await bob.unsubscribe("room.lobby")
        assert (await bob.subscribe("room.hall"))["successful"]  # the unsubscribe is done
        await ann.emit("message", {"text": "bye"}, channel="room.lobby")
        assert (await ann.receive()).data == {"text": "bye"}
        await eve.assert_no_message()
        await bob.assert_no_message()


@pytest.mark.parametrize(
    ("listener", "feature", "store"),
    [(Log, "history", "HistoryStore"), (Lobby, "presence", "PresenceStore")],
    ids=["history", "presence"],
)
async def test_a_listener_needing_a_store_is_refused_at_start(
    listener: type[ChannelListener], feature: str, store: str
) -> None:
    broker = PubSubBroker()
    channels = Channels(broker=broker, listeners=[Room, listener])
    with pytest.raises(ConfigurationError, match=rf"declares {feature}.* not a {store}"):
        async with channels:
            pass  # pragma: no cover - it must not start
    assert broker.state.value == "stopped"
