"""The broker interface: bytes between processes, by topic.

A broker knows topics and bytes, never connections, packets or users. The server encodes each
message once, publishes the bytes, and fans out whatever the broker delivers to its local
connections. Interest in a topic is reference-counted here, so a concrete broker sees one
``_subscribe`` when the first local subscriber arrives and one ``_unsubscribe`` when the last
one leaves.

Two optional capabilities keep state shared by every process (a broker lists what it supports
in `Broker.capabilities`; the others raise `BrokerError`):

* ``history``: stored topics. `Broker.publish_stored` appends a message to the topic's
  history and publishes it, atomically, with its `Position` (an integer offset within an
  epoch); `Broker.read_stored` reads what is retained.
* ``presence``: who is in a topic, by member key, across processes. Each process registers its
  own members and keeps itself alive with `Broker.presence_renew`; the members of a
  process that stops renewing are swept by the others. Joins and leaves are announced on the
  topic itself, atomically with the change, so every process sees them in one order.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from fastapi_channels.wire.errors import BrokerError
from fastapi_channels.wire.stored import Position, Retention, Stored, StoredEntry

__all__ = [
    "Announcements",
    "Broker",
    "BrokerHealth",
    "BrokerState",
    "MessageHandler",
    "Position",
    "Retention",
    "Stored",
    "StoredEntry",
    "StoredHandler",
]

MessageHandler = Callable[[str, bytes], None]
"""Called with ``(topic, data)`` for every message on a subscribed topic, in publish order per
publisher. It runs on the event loop and must not block."""


StoredHandler = Callable[[str, bytes, Position], None]
"""Called with ``(topic, data, position)`` for every stored message on a subscribed topic, in
offset order. It runs on the event loop and must not block."""


@dataclass(frozen=True, slots=True)
class Announcements:
    """How a presence topic announces its changes: a packet is ``prefix + info + suffix``.

    ``info`` is the member's stored info (bytes given when it joined). The broker publishes
    the result on the presence topic when a member joins (``join``) or leaves (``leave``),
    atomically with the change.
    """

    join: tuple[bytes, bytes]
    leave: tuple[bytes, bytes]


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
    """Base class of every broker.

    Subclasses implement `publish`, `_subscribe` and `_unsubscribe`, and may
    override `start` and `stop`; a broker with a transport reports its state
    through `_set_state`.
    """

    name: ClassVar[str] = "broker"
    """The kind of broker, as shown by `health`."""

    capabilities: ClassVar[frozenset[str]] = frozenset()
    """The optional capabilities the broker implements: ``"history"``, ``"presence"``."""

    def __init__(self) -> None:
        self._handler: MessageHandler | None = None
        self._stored_handler: StoredHandler | None = None
        self._interest: dict[str, int] = {}
        self._pending: dict[str, asyncio.Future[None]] = {}
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

    def _deliver_stored(self, topic: str, data: bytes, position: Position) -> None:
        """Hand one received stored message to the server, if this process wants the topic."""
        if self._stored_handler is not None and topic in self._interest:
            self._stored_handler(topic, data, position)

    async def start(self, handler: MessageHandler, stored: StoredHandler | None = None) -> None:
        """Start delivering messages on subscribed topics to ``handler``.

        Stored messages (see `publish_stored`) go to ``stored``, with their position;
        without it they are not delivered.
        """
        self._handler = handler
        self._stored_handler = stored
        self._set_state(BrokerState.CONNECTED)

    async def stop(self) -> None:
        """Stop delivering and release every resource; interest is forgotten."""
        self._handler = None
        self._stored_handler = None
        self._interest.clear()
        self._set_state(BrokerState.STOPPED)

    async def subscribe(self, topic: str) -> None:
        """Add one unit of interest in ``topic``.

        Returns once messages published to ``topic`` from now on will be delivered, so a caller
        may tell a client it is subscribed. Concurrent callers for a new topic share one
        underlying subscription and all wait for it.

        Raises:
            BrokerError: the subscription could not be made; the interest is not kept.
        """
        count = self._interest.get(topic, 0) + 1
        self._interest[topic] = count
        if count > 1:
            pending = self._pending.get(topic)
            if pending is not None:
                await asyncio.shield(pending)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[topic] = future
        try:
            await self._subscribe(topic)
        except BaseException as exc:
            self._release(topic)
            future.set_exception(exc)
            future.exception()  # mark retrieved: the raise below reports it
            raise
        else:
            future.set_result(None)
        finally:
            self._pending.pop(topic, None)

    async def unsubscribe(self, topic: str) -> None:
        """Remove one unit of interest in ``topic``; the last one unsubscribes for real."""
        if self._release(topic):
            await self._unsubscribe(topic)

    def _release(self, topic: str) -> bool:
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

    # ------------------------------------------------------------------ history (optional)

    async def publish_stored(self, topic: str, data: bytes, retention: Retention) -> Position:
        """Append ``data`` to ``topic``'s history and deliver it to every process, this one too.

        The append and the publish are one atomic step, so every process receives a topic's
        stored messages in offset order, each once; they arrive through the ``stored`` handler
        given to `start`, with their position. Unlike `publish`, nothing is
        delivered when the message cannot be stored.

        Raises:
            BrokerError: the broker keeps no history, or the message could not be stored (then
                it was delivered nowhere).
        """
        raise self._unsupported("history")

    async def read_stored(self, topic: str, retention: Retention, after: int = 0) -> Stored:
        """Read ``topic``'s retained messages with an offset above ``after``, oldest first.

        Reading a topic that has no epoch yet gives it one, so a position read now stays valid
        for the messages published next.

        Raises:
            BrokerError: the broker keeps no history, or the store could not be read.
        """
        raise self._unsupported("history")

    # ------------------------------------------------------------------ presence (optional)

    async def presence_update(
        self,
        topic: str,
        join: Mapping[str, bytes],
        leave: Collection[str],
        announce: Announcements,
    ) -> tuple[list[str], list[str]]:
        """Register and unregister members of ``topic`` for this process, in one atomic step.

        ``join`` maps member keys to their info; ``leave`` lists member keys. Both are
        idempotent. A member no process held before joins the topic: its info is kept while
        any process holds it, and the join is announced. A member no process holds any more
        leaves it: the leave is announced. Returns the members whose join, and whose leave, was
        announced.

        Raises:
            BrokerError: the broker keeps no presence, or the store could not be reached (the
                update may or may not have been applied).
        """
        raise self._unsupported("presence")

    async def presence_members(self, topic: str, announce: Announcements) -> dict[str, bytes]:
        """Return ``topic``'s members and their info, from every live process.

        Members of processes that stopped renewing are swept first (and their leaves
        announced).

        Raises:
            BrokerError: the broker keeps no presence, or the store could not be reached.
        """
        raise self._unsupported("presence")

    async def presence_count(self, topic: str, announce: Announcements) -> int:
        """Return how many members ``topic`` has on every live process (sweeping as above).

        Raises:
            BrokerError: the broker keeps no presence, or the store could not be reached.
        """
        raise self._unsupported("presence")

    async def presence_renew(self, timeout: float) -> bool:
        """Declare this process alive for ``timeout`` more seconds.

        Returns whether it was still alive before this call. False means its registrations may
        have been swept (the first call, a renewal too late, a store that lost its data): the
        caller should register its members again with `presence_sync`.

        Raises:
            BrokerError: the broker keeps no presence, or the store could not be reached.
        """
        raise self._unsupported("presence")

    async def presence_sync(
        self, topic: str, members: dict[str, bytes], announce: Announcements
    ) -> None:
        """Make this process's members of ``topic`` exactly ``members`` (key to info).

        Members added or removed are announced as by `presence_update`.

        Raises:
            BrokerError: the broker keeps no presence, or the store could not be reached.
        """
        raise self._unsupported("presence")

    async def presence_sweep(
        self, topics: dict[str, int], announce: dict[str, Announcements]
    ) -> list[str]:
        """Sweep the members of dead processes out of ``topics``, announcing their leaves.

        ``topics`` maps each topic to how many members this process believes it holds there;
        the topics where the store disagrees are returned (they need `presence_sync`).
        It also keeps the topics' records from expiring while this process uses them.

        Raises:
            BrokerError: the broker keeps no presence, or the store could not be reached.
        """
        raise self._unsupported("presence")

    async def presence_retire(self) -> None:
        """Declare this process dead at once, so its remaining members are swept.

        Raises:
            BrokerError: the broker keeps no presence, or the store could not be reached.
        """
        raise self._unsupported("presence")

    def _unsupported(self, capability: str) -> BrokerError:
        return BrokerError(f"the {self.name} broker does not support {capability}")
