"""The broker contract: bytes between processes, by topic.

A broker knows topics and bytes, never connections, packets or users. The server encodes each
message once, publishes the bytes, and fans out whatever the broker delivers to its local
connections.

What the server uses of a broker is six members: `Broker.start`, `Broker.stop`,
`Broker.publish`, `Broker.subscribe`, `Broker.unsubscribe` and `Broker.state`. A new engine
implements three of them, ``publish``, ``_subscribe`` and ``_unsubscribe``: this base class
counts the interest in each topic, so an engine sees one ``_subscribe`` when the first local
subscriber arrives and one ``_unsubscribe`` when the last one leaves, and it keeps the state
(an engine with a transport reports changes through ``_set_state``).

State shared by every process is optional, and found by type: a broker that keeps history also
implements `fastapi_channels.brokers.stores.HistoryStore`, one that keeps presence
`fastapi_channels.brokers.stores.PresenceStore`. ``Channels`` refuses to start a listener that
needs one of them on a broker that does not implement it.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

__all__ = [
    "Broker",
    "BrokerHealth",
    "BrokerState",
    "MessageHandler",
]

MessageHandler = Callable[[str, bytes], None]
"""Called with ``(topic, data)`` for every message on a subscribed topic, in publish order per
publisher. It runs on the event loop and must not block."""


class BrokerState(StrEnum):
    """Where a broker is in its life."""

    STOPPED = "stopped"
    """Not started yet, or stopped: nothing is delivered."""
    CONNECTING = "connecting"
    """Started, not connected to its transport yet; local delivery already works."""
    CONNECTED = "connected"
    """Delivering between processes."""
    RECONNECTING = "reconnecting"
    """The transport was lost; local delivery goes on while the broker reconnects."""


@dataclass(frozen=True, slots=True)
class BrokerHealth:
    """A snapshot of a broker's state, for health checks.

    Attributes:
        broker: the kind of broker (``"memory"``, ``"redis"``).
        state: the broker's state when the snapshot was taken.
        topics: how many topics this process has local interest in.
        last_error: the last transport error, if any, for operators (no secrets in it).
        changed_at: when ``state`` last changed, in seconds since the epoch.
    """

    broker: str
    state: BrokerState
    topics: int
    last_error: str | None
    changed_at: float

    @property
    def healthy(self) -> bool:
        """Whether messages currently reach every process (the state is ``connected``)."""
        return self.state is BrokerState.CONNECTED

    def as_dict(self) -> dict[str, Any]:
        """Return the snapshot as JSON-ready values, ``healthy`` included."""
        return {
            "broker": self.broker,
            "state": self.state.value,
            "healthy": self.healthy,
            "topics": self.topics,
            "last_error": self.last_error,
            "changed_at": self.changed_at,
        }


class Broker(ABC):
    """Base class of every broker: the six members the server uses, and interest counting.

    Subclasses implement `publish`, `_subscribe` and `_unsubscribe`, and may override `start`
    and `stop` (calling these); a broker with a transport reports its state through
    `_set_state`. `health`, `counters`, `topics` and `wait_for_state` are read-only helpers
    for operators and the server's reconnection watch, derived from the same state.
    """

    name: ClassVar[str] = "broker"
    """The kind of broker, as shown by `health`."""

    def __init__(self) -> None:
        self._handler: MessageHandler | None = None
        self._interest: dict[str, int] = {}
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._made: set[str] = set()  # topics whose underlying subscription is made
        self._state = BrokerState.STOPPED
        self._last_error: str | None = None
        self._changed_at = time.time()
        self._state_changed = asyncio.Event()

    @property
    def topics(self) -> frozenset[str]:
        """The topics this process currently has local interest in."""
        return frozenset(self._interest)

    @property
    def state(self) -> BrokerState:
        """The broker's current state."""
        return self._state

    @property
    def healthy(self) -> bool:
        """Whether the broker currently delivers between processes (it is connected)."""
        return self._state is BrokerState.CONNECTED

    def health(self) -> BrokerHealth:
        """Return a snapshot of the broker's state for a health check; cheap, no I/O."""
        return BrokerHealth(
            broker=self.name,
            state=self._state,
            topics=len(self._interest),
            last_error=self._last_error,
            changed_at=self._changed_at,
        )

    def counters(self) -> dict[str, int]:
        """Return the transport's traffic counters since creation, for metrics (none here)."""
        return {}

    async def wait_for_state(self, *states: BrokerState) -> BrokerState:
        """Wait until the broker is in one of ``states`` and return that state.

        There is no timeout here: wrap the call in ``asyncio.timeout`` to bound it.
        """
        while self._state not in states:
            changed = self._state_changed
            await changed.wait()
        return self._state

    def _set_state(self, state: BrokerState, error: BaseException | str | None = None) -> None:
        """Record a state change (and the error behind it) and wake `wait_for_state`."""
        if error is not None:
            self._last_error = (
                error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            )
        if state is self._state:
            return
        self._state = state
        self._changed_at = time.time()
        self._state_changed.set()
        self._state_changed = asyncio.Event()

    def _deliver(self, topic: str, data: bytes) -> None:
        """Hand one received message to the server, if this process still wants the topic."""
        if self._handler is not None and topic in self._interest:
            self._handler(topic, data)

    async def start(self, handler: MessageHandler) -> None:
        """Start delivering messages on subscribed topics to ``handler``."""
        self._handler = handler
        self._set_state(BrokerState.CONNECTED)

    async def stop(self) -> None:
        """Stop delivering and release every resource; interest is forgotten."""
        self._handler = None
        self._interest.clear()
        self._made.clear()
        self._set_state(BrokerState.STOPPED)

    async def subscribe(self, topic: str) -> None:
        """Add one unit of interest in ``topic``.

        Returns once messages published to ``topic`` from now on will be delivered, so a caller
        may tell a client it is subscribed. Concurrent callers for a new topic share one
        underlying subscription and all wait for it. A caller that fails or is cancelled keeps
        no interest; when the caller making the subscription is cancelled, the others (not
        cancelled themselves) make it again.

        Raises:
            BrokerError: the subscription could not be made; the interest is not kept.
        """
        self._interest[topic] = self._interest.get(topic, 0) + 1
        try:
            while topic not in self._made:
                pending = self._pending.get(topic)
                if pending is None:
                    await self._make(topic)
                    return
                try:
                    await asyncio.shield(pending)
                except asyncio.CancelledError:
                    if pending.cancelled() and not _being_cancelled():
                        continue  # the caller making it was cancelled, not this one: retry
                    raise
        except BaseException:
            if self._release(topic) and topic in self._made:
                self._made.discard(topic)  # the others left meanwhile: nobody wants it
                await self._unsubscribe(topic)
            raise

    async def _make(self, topic: str) -> None:
        """Make the underlying subscription, sharing the wait with concurrent callers."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[topic] = future
        try:
            await self._subscribe(topic)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: the raise below reports it
            raise
        else:
            self._made.add(topic)
            future.set_result(None)
        finally:
            self._pending.pop(topic, None)

    async def unsubscribe(self, topic: str) -> None:
        """Remove one unit of interest in ``topic``; the last one unsubscribes for real."""
        if self._release(topic) and topic in self._made:
            self._made.discard(topic)
            await self._unsubscribe(topic)

    def _release(self, topic: str) -> bool:
        """Give back one unit of interest; return whether it was the last one."""
        count = self._interest.get(topic, 0) - 1
        if count > 0:
            self._interest[topic] = count
            return False
        self._interest.pop(topic, None)
        return count == 0

    @abstractmethod
    async def publish(self, topic: str, data: bytes) -> None:
        """Send ``data`` to every process interested in ``topic``, this one included.

        Messages published by one process to one topic arrive in publish order.

        Raises:
            BrokerError: the message could not be handed to the transport.
        """

    @abstractmethod
    async def _subscribe(self, topic: str) -> None:
        """Start receiving ``topic`` (called once, when interest goes from zero to one)."""

    @abstractmethod
    async def _unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic`` (called once, when interest drops to zero)."""


def _being_cancelled() -> bool:
    """Whether the running task has been asked to stop (a cancellation of its own)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
