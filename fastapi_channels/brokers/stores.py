"""What a broker may keep besides pub/sub: history and presence, shared by every process.

Each is an interface a broker implements beside `fastapi_channels.brokers.base.Broker`; the
server finds them by type (``isinstance(broker, HistoryStore)``). A broker without them is a
pub/sub broker: every channel works on it except those declaring ``history`` or ``presence``,
which ``Channels`` refuses at start-up.

* `HistoryStore`: stored topics. `HistoryStore.publish_stored` appends a message to the
  topic's history and publishes it, atomically, with its `Position` (an integer offset within
  an epoch); `HistoryStore.read_stored` reads what is retained. Stored messages reach every
  process through the handler given to `HistoryStore.deliver_stored_to`.
* `PresenceStore`: who is in a topic, by member key, across processes. Each process registers
  its own members and keeps itself alive with `PresenceStore.presence_renew`; the members of a
  process that stops renewing are swept by the others. Joins and leaves are announced on the
  topic itself (through the plain message handler), atomically with the change, so every
  process sees them in one order. A store that lost its records (a Redis restart without
  persistence) is *unsettled* until every live process had the time to register its members
  again: reads say so (`PresenceSnapshot.partial`), so nobody takes a list being refilled for
  a room that emptied.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from fastapi_channels.wire.errors import HistoryFull
from fastapi_channels.wire.stored import Position, Retention, Stored, StoredEntry

__all__ = [
    "Announcements",
    "BoundedHistoryStore",
    "HistoryFull",
    "HistoryStore",
    "Position",
    "PresenceSnapshot",
    "PresenceStore",
    "Retention",
    "Stored",
    "StoredEntry",
    "StoredHandler",
]

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


@dataclass(frozen=True, slots=True)
class PresenceSnapshot:
    """A presence topic's members as one read found them, and whether the list is complete.

    Attributes:
        members: member key to info, from every live process.
        partial: the list may lack members: the store lost its records less than a renewal
            timeout ago and live processes may not have registered theirs again, or the reading
            process itself is not registered (then it was not swept either).
        settles_in: seconds until the store counts as settled again (0 when it does, or
            cannot tell).
        registered: whether the reading process was alive in the store.
    """

    members: dict[str, bytes] = field(default_factory=dict)
    partial: bool = False
    settles_in: float = 0.0
    registered: bool = True


class HistoryStore(ABC):
    """A broker that keeps the last messages of stored topics, for every process.

    Implementations call `_deliver_stored` for each stored message they receive; it reaches
    the handler given to `deliver_stored_to` when this process is interested in the topic.
    """

    _stored_handler: StoredHandler | None = None
    _interest: dict[str, int]  # the broker's interest counts (see `Broker`)

    def deliver_stored_to(self, handler: StoredHandler | None) -> None:
        """Send stored messages of subscribed topics to ``handler`` (None: send them nowhere)."""
        self._stored_handler = handler

    def _deliver_stored(self, topic: str, data: bytes, position: Position) -> None:
        """Hand one received stored message to the server, if this process wants the topic."""
        handler = self._stored_handler
        if handler is not None and topic in self._interest:
            handler(topic, data, position)

    @abstractmethod
    async def publish_stored(self, topic: str, data: bytes, retention: Retention) -> Position:
        """Append ``data`` to ``topic``'s history and deliver it to every process, this one too.

        The append and the publish are one atomic step, so every process receives a topic's
        stored messages in offset order, each once; they arrive through the handler given to
        `deliver_stored_to`, with their position. Unlike ``Broker.publish``, nothing is
        delivered when the message cannot be stored.

        A topic that holds no history yet is counted in ``retention.group`` first: when the
        group has ``retention.max_topics`` topics holding history already (expired ones aside),
        nothing is stored or delivered. The count and the append are one atomic step, so
        processes publishing at once never exceed the bound.

        Raises:
            HistoryFull: the group is full (then it was delivered nowhere).
            BrokerError: the message could not be stored (then it was delivered nowhere).
        """

    @abstractmethod
    async def read_stored(self, topic: str, retention: Retention, after: int = 0) -> Stored:
        """Read ``topic``'s retained messages with an offset above ``after``, oldest first.

        Reading a topic that has no epoch yet gives it one, so a position read now stays valid
        for the messages published next; it counts in ``retention.group`` as a publish does.
        When the group is full, the read answers a fresh epoch that is not kept (and offset 0).

        Raises:
            BrokerError: the store could not be read.
        """


class BoundedHistoryStore(HistoryStore):
    """A `HistoryStore` that honours ``Retention.max_topics``, a bound on topics with history.

    At most that many topics of one ``Retention.group`` hold history at once, across
    processes, counted atomically with the append (a topic no longer counts ``keep`` after its
    last stored message). When the bound is reached, storing on a topic that holds no history
    raises `HistoryFull` and delivers nothing. ``Channels`` refuses
    ``History(max_channels=...)`` on a broker that is not one.
    """


class PresenceStore(ABC):
    """A broker that keeps who is in each presence topic, across processes."""

    @abstractmethod
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
            BrokerError: the store could not be reached (the
                update may or may not have been applied).
        """

    @abstractmethod
    async def presence_members(self, topic: str, announce: Announcements) -> dict[str, bytes]:
        """Return ``topic``'s members and their info, from every live process.

        Members of processes that stopped renewing are swept first (and their leaves
        announced).

        Raises:
            BrokerError: the store could not be reached.
        """

    async def presence_snapshot(self, topic: str, announce: Announcements) -> PresenceSnapshot:
        """Return ``topic``'s members as `presence_members` does, and whether they are all.

        After the store lost its records, lists are `PresenceSnapshot.partial` until
        ``timeout`` (of `presence_renew`) after the first renewal that found it: by then every
        live process has renewed, found itself forgotten and registered its members again. A
        process not alive in the store gets a partial list and sweeps nothing (it should renew
        and read again). A store that cannot tell says complete (this default).

        Raises:
            BrokerError: the store could not be reached.
        """
        return PresenceSnapshot(await self.presence_members(topic, announce))

    @abstractmethod
    async def presence_count(self, topic: str, announce: Announcements) -> int:
        """Return how many members ``topic`` has on every live process (sweeping as above).

        Raises:
            BrokerError: the store could not be reached.
        """

    @abstractmethod
    async def presence_renew(self, timeout: float, *, was_alive: bool = False) -> bool:
        """Declare this process alive for ``timeout`` more seconds.

        Returns whether it was still alive before this call. False means its registrations may
        have been swept (the first call, a renewal too late, a store that lost its data): the
        caller should register its members again with `presence_sync`.

        ``was_alive`` says that this process's previous renewal succeeded. When it did and the
        store now knows no live process at all, the store lost its records: it is unsettled
        for ``timeout`` seconds from this call (see `presence_snapshot`), unless it is already.

        Raises:
            BrokerError: the store could not be reached.
        """

    @abstractmethod
    async def presence_sync(
        self, topic: str, members: dict[str, bytes], announce: Announcements
    ) -> None:
        """Make this process's members of ``topic`` exactly ``members`` (key to info).

        Members added or removed are announced as by `presence_update`.

        Raises:
            BrokerError: the store could not be reached.
        """

    @abstractmethod
    async def presence_sweep(
        self, topics: dict[str, int], announce: dict[str, Announcements]
    ) -> list[str]:
        """Sweep the members of dead processes out of ``topics``, announcing their leaves.

        ``topics`` maps each topic to how many members this process believes it holds there;
        the topics where the store disagrees are returned (they need `presence_sync`).
        It also keeps the topics' records from expiring while this process uses them.

        Raises:
            BrokerError: the store could not be reached.
        """

    @abstractmethod
    async def presence_retire(self) -> None:
        """Declare this process dead at once, so its remaining members are swept.

        Raises:
            BrokerError: the store could not be reached.
        """
