"""A pub/sub-only broker in about fifty lines: how small a new engine can be.

It subclasses `Broker` alone, so it keeps neither history nor presence, and implements the three
members an engine must: ``publish``, ``_subscribe`` and ``_unsubscribe``. The base class counts
the interest in each topic and keeps the state. Its "transport" is a `PubSubNetwork` object that
several brokers share, each one standing for a process of one deployment; a real engine would
talk to a server there, and override ``start`` and ``stop`` to connect and disconnect (reporting
its state with ``_set_state``). The contract suite (``tests/contract``) runs on it.
"""

from __future__ import annotations

# --8<-- [start:broker]
from fastapi_channels.brokers import Broker


class PubSubNetwork:
    """What several `PubSubBroker` instances share: which of them receive which topic."""

    def __init__(self) -> None:
        self.receivers: dict[str, list[PubSubBroker]] = {}


class PubSubBroker(Broker):
    """Delivers through a `PubSubNetwork`, synchronously, in publish order.

    Args:
        network: the network shared with the other "processes"; a private one by default.
    """

    name = "pubsub"

    def __init__(self, network: PubSubNetwork | None = None) -> None:
        super().__init__()
        self.network = network if network is not None else PubSubNetwork()

    async def publish(self, topic: str, data: bytes) -> None:
        for broker in tuple(self.network.receivers.get(topic, ())):
            broker._deliver(topic, data)  # the base class checks the handler and the interest

    async def _subscribe(self, topic: str) -> None:
        self.network.receivers.setdefault(topic, []).append(self)

    async def _unsubscribe(self, topic: str) -> None:
        receivers = self.network.receivers.get(topic, [])
        if self in receivers:
            receivers.remove(self)
        if not receivers:
            self.network.receivers.pop(topic, None)

    async def stop(self) -> None:
        for topic in self.topics:  # stop forgets the interest: leave the network first
            await self._unsubscribe(topic)
        await super().stop()


# --8<-- [end:broker]
