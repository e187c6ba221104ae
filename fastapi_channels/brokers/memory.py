"""The in-memory broker: one process, no I/O, the default.

Several in-memory brokers may share one `MemoryHub`, which then plays the part Redis
plays for the Redis broker: each broker is a "process", messages published by one reach the
others, and history, presence and idempotency keys are shared. That runs a multi-process
deployment inside one test, with the same behaviour as on Redis.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Mapping

from fastapi_channels.brokers._memory_state import PresenceTable, SeenKeys, Streams
from fastapi_channels.brokers.base import Broker, MessageHandler
from fastapi_channels.brokers.idempotency import IdempotencyStore, Published
from fastapi_channels.brokers.stores import (
    Announcements,
    BoundedHistoryStore,
    Position,
    PresenceSnapshot,
    PresenceStore,
    Retention,
    Stored,
)

__all__ = ["MemoryBroker", "MemoryHub"]


class MemoryHub:
    """What several in-memory brokers share: delivery, history, presence and idempotency keys.

    Args:
        clock: the time source for history expiry and presence deadlines, in seconds
            (``time.monotonic`` by default).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._brokers: list[MemoryBroker] = []
        self.streams = Streams(clock)
        """The stored topics."""
        self.presence = PresenceTable(clock, self.publish)
        """The presence topics."""
        self.seen = SeenKeys(clock)
        """The idempotency keys published, per topic."""

    def attach(self, broker: MemoryBroker) -> None:
        """Add ``broker`` to the hub (its ``start``)."""
        if broker not in self._brokers:
            self._brokers.append(broker)

    def detach(self, broker: MemoryBroker) -> None:
        """Remove ``broker`` from the hub (its ``stop``)."""
        if broker in self._brokers:
            self._brokers.remove(broker)

    def publish(self, topic: str, data: bytes) -> None:
        """Deliver ``data`` to every attached broker interested in ``topic``."""
        for broker in self._brokers:
            broker._deliver(topic, data)

    def publish_stored(self, topic: str, data: bytes, position: Position) -> None:
        """Deliver a stored message to every attached broker interested in ``topic``."""
        for broker in self._brokers:
            broker._deliver_stored(topic, data, position)


class MemoryBroker(Broker, BoundedHistoryStore, PresenceStore, IdempotencyStore):
    """Delivers within this process, synchronously, in publish order.

    ``publish`` hands the bytes to the server's fan-out before it returns, so it never waits on
    a slow consumer: the fan-out only appends to bounded per-connection queues. It is
    ``connected`` from `start` to `stop`.

    Args:
        hub: the hub shared with other in-memory brokers; a private one by default.
    """

    name = "memory"

    def __init__(self, hub: MemoryHub | None = None) -> None:
        super().__init__()
        self.hub = hub if hub is not None else MemoryHub()
        """The hub this broker delivers through."""
        self.process = os.urandom(8).hex()
        """This broker's name among the hub's processes (for presence)."""

    async def start(self, handler: MessageHandler) -> None:
        """Start delivering, and join the hub."""
        await super().start(handler)
        self.hub.attach(self)

    async def stop(self) -> None:
        """Leave the hub and stop delivering."""
        self.hub.detach(self)
        await super().stop()

    async def publish(self, topic: str, data: bytes) -> None:
        """Deliver ``data`` to the hub's subscribers of ``topic``, this process's included."""
        self.hub.publish(topic, data)

    async def _subscribe(self, topic: str) -> None:
        return None

    async def _unsubscribe(self, topic: str) -> None:
        return None

    async def publish_stored(self, topic: str, data: bytes, retention: Retention) -> Position:
        """Store ``data`` and deliver it with its position, synchronously."""
        offset, epoch = self.hub.streams.append(topic, data, retention)
        position = Position(offset, epoch)
        self.hub.publish_stored(topic, data, position)
        return position

    async def publish_once(
        self,
        topic: str,
        data: bytes,
        key: str,
        window: float,
        retention: Retention | None = None,
    ) -> Published:
        """Publish (and store, with ``retention``) unless the hub saw ``key`` on ``topic``."""
        seen, position = self.hub.seen.seen(topic, key)
        if seen:
            return Published(duplicate=True, position=position)
        if retention is None:
            self.hub.publish(topic, data)
            position = None
        else:
            offset, epoch = self.hub.streams.append(topic, data, retention)
            position = Position(offset, epoch)
            self.hub.publish_stored(topic, data, position)
        self.hub.seen.record(topic, key, window, position)
        return Published(duplicate=False, position=position)

    async def read_stored(self, topic: str, retention: Retention, after: int = 0) -> Stored:
        """Read the retained messages above ``after``."""
        return self.hub.streams.read(topic, retention, after)

    async def presence_update(
        self,
        topic: str,
        join: Mapping[str, bytes],
        leave: Collection[str],
        announce: Announcements,
    ) -> tuple[list[str], list[str]]:
        """Register ``join`` and unregister ``leave`` for this broker."""
        return self.hub.presence.update(topic, self.process, join, leave, announce)

    async def presence_members(self, topic: str, announce: Announcements) -> dict[str, bytes]:
        """The members of ``topic`` on live brokers."""
        return self.hub.presence.members(topic, announce)

    async def presence_snapshot(self, topic: str, announce: Announcements) -> PresenceSnapshot:
        """The members of ``topic`` on live brokers, and whether the list is complete."""
        return self.hub.presence.snapshot(topic, self.process, announce)

    async def presence_count(self, topic: str, announce: Announcements) -> int:
        """How many members ``topic`` has on live brokers."""
        return self.hub.presence.count(topic, announce)

    async def presence_renew(self, timeout: float, *, was_alive: bool = False) -> bool:
        """Keep this broker alive ``timeout`` more seconds."""
        return self.hub.presence.renew(self.process, timeout, was_alive)

    async def presence_sync(
        self, topic: str, members: dict[str, bytes], announce: Announcements
    ) -> None:
        """Make this broker's members of ``topic`` exactly ``members``."""
        self.hub.presence.sync(topic, self.process, members, announce)

    async def presence_sweep(
        self, topics: dict[str, int], announce: dict[str, Announcements]
    ) -> list[str]:
        """Sweep dead brokers out of ``topics``."""
        return self.hub.presence.sweep(self.process, topics, announce)

    async def presence_retire(self) -> None:
        """Declare this broker dead."""
        self.hub.presence.retire(self.process)
