"""The state a `MemoryHub` shares between its brokers.

Plain data structures with the semantics the Redis broker gets from its Lua scripts, so the two
brokers behave alike: stored topics (`Streams`), presence (`PresenceTable`) and the
idempotency keys seen (`SeenKeys`).
Every operation is synchronous, hence atomic on the event loop. Time comes from the hub's clock
(seconds, monotonic).
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from fastapi_channels.brokers.stores import (
    Announcements,
    Position,
    PresenceSnapshot,
    Retention,
    Stored,
    StoredEntry,
)
from fastapi_channels.wire.errors import HistoryFull

__all__ = ["PresenceTable", "SeenKeys", "Streams", "new_epoch"]

Publish = Callable[[str, bytes], None]
"""Delivers an announcement on a topic to every broker of the hub."""

_SWEEP_EVERY = 60.0
"""Seconds between two sweeps of expired stored topics."""


def new_epoch() -> str:
    """A fresh epoch: 12 random hex characters."""
    return secrets.token_hex(6)


@dataclass(slots=True)
class _Stream:
    epoch: str
    top: int = 0
    expires_at: float = float("inf")
    entries: deque[tuple[int, float, bytes]] = field(default_factory=deque)
    """(offset, published at, data), oldest first."""


class Streams:
    """Stored topics: their epoch, last offset and retained messages.

    Topics whose retention sets ``max_topics`` are counted per ``group`` while they hold
    history (until ``keep`` after their last append): a new topic beyond the bound is refused.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._streams: dict[str, _Stream] = {}
        self._groups: dict[str, set[str]] = {}
        self._next_sweep = clock() + _SWEEP_EVERY

    def __len__(self) -> int:
        return len(self._streams)

    def append(self, topic: str, data: bytes, retention: Retention) -> tuple[int, str]:
        """Append ``data``; return its offset and the topic's epoch.

        Raises:
            HistoryFull: the topic holds no history and its group has ``max_topics`` already.
        """
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        if not self._holds(topic, now) and not self._admit(topic, retention, now):
            raise HistoryFull(
                f"{retention.group!r} has {retention.max_topics} channels with history already"
            )
        stream = self._stream(topic, now)
        stream.top += 1
        entries = stream.entries
        entries.append((stream.top, now, data))
        while len(entries) > retention.size:
            entries.popleft()
        if retention.ttl is not None:
            oldest = now - retention.ttl
            while entries and entries[0][1] < oldest:
                entries.popleft()
        stream.expires_at = now + retention.keep
        return stream.top, stream.epoch

    def read(self, topic: str, retention: Retention, after: int) -> Stored:
        """The retained messages above ``after`` (see ``Broker.read_stored``)."""
        now = self._clock()
        if not self._holds(topic, now) and not self._admit(topic, retention, now):
            return Stored(epoch=new_epoch(), top=0, entries=[])  # an epoch not kept
        stream = self._stream(topic, now)
        if stream.expires_at == float("inf"):
            stream.expires_at = now + retention.keep
        first = max(after, stream.top - retention.size) + 1
        oldest = now - retention.ttl if retention.ttl is not None else None
        entries = [
            StoredEntry(offset, data)
            for offset, at, data in stream.entries
            if offset >= first and (oldest is None or at >= oldest)
        ]
        return Stored(epoch=stream.epoch, top=stream.top, entries=entries)

    def _holds(self, topic: str, now: float) -> bool:
        stream = self._streams.get(topic)
        return stream is not None and stream.expires_at > now

    def _admit(self, topic: str, retention: Retention, now: float) -> bool:
        """Count ``topic`` in its group, if the group has room; whether it was counted."""
        if retention.max_topics is None:
            return True
        members = self._groups.setdefault(retention.group, set())
        if len(members) >= retention.max_topics:
            for gone in [t for t in members if not self._holds(t, now)]:
                members.discard(gone)
            if len(members) >= retention.max_topics:
                return False
        members.add(topic)
        return True

    def _stream(self, topic: str, now: float) -> _Stream:
        stream = self._streams.get(topic)
        if stream is None or stream.expires_at <= now:
            stream = self._streams[topic] = _Stream(epoch=new_epoch())
        return stream

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + _SWEEP_EVERY
        for topic in [t for t, s in self._streams.items() if s.expires_at <= now]:
            del self._streams[topic]


@dataclass(slots=True)
class _Topic:
    info: dict[str, bytes] = field(default_factory=dict)
    """Each member's info, as given by its first join."""
    holders: dict[str, int] = field(default_factory=dict)
    """How many processes hold each member."""
    local: dict[str, set[str]] = field(default_factory=dict)
    """Each process's members."""


class PresenceTable:
    """Who is in each presence topic, by process, and which processes are alive."""

    def __init__(self, clock: Callable[[], float], publish: Publish) -> None:
        self._clock = clock
        self._publish = publish
        self._alive: dict[str, float] = {}
        self._topics: dict[str, _Topic] = {}
        self._unsettled_until = float("-inf")

    def renew(self, process: str, timeout: float, was_alive: bool = False) -> bool:
        """Keep ``process`` alive ``timeout`` more seconds; return whether it was alive.

        A process that ``was_alive`` finding no live process at all means the records were
        lost: reads are partial for ``timeout`` seconds (see ``PresenceStore``).
        """
        now = self._clock()
        deadline = self._alive.get(process)
        for dead in [p for p, d in self._alive.items() if d < now]:
            del self._alive[dead]  # their members are swept as dead all the same
        alive = deadline is not None and deadline >= now
        if was_alive and not alive and not self._alive and self._unsettled_until <= now:
            self._unsettled_until = now + timeout
        self._alive[process] = now + timeout
        return alive

    def retire(self, process: str) -> None:
        """Declare ``process`` dead."""
        self._alive.pop(process, None)

    def update(
        self,
        topic: str,
        process: str,
        join: Mapping[str, bytes],
        leave: Collection[str],
        announce: Announcements,
    ) -> tuple[list[str], list[str]]:
        """Unregister ``leave`` and register ``join`` for ``process``; return the announced."""
        state = self._topics.setdefault(topic, _Topic())
        left = [m for m in leave if self._remove(topic, state, process, m, announce)]
        joined = [
            m for m, info in join.items() if self._add(topic, state, process, m, info, announce)
        ]
        self._forget_if_empty(topic, state)
        return joined, left

    def members(self, topic: str, announce: Announcements) -> dict[str, bytes]:
        """The members of ``topic`` on live processes, after sweeping the dead ones."""
        state = self._sweep(topic, announce)
        return dict(state.info) if state is not None else {}

    def snapshot(self, topic: str, process: str, announce: Announcements) -> PresenceSnapshot:
        """The members as `members` reads them, and whether the list is complete."""
        now = self._clock()
        deadline = self._alive.get(process)
        registered = deadline is not None and deadline >= now
        # A process that is not alive sweeps nothing: it would sweep its own members.
        state = self._sweep(topic, announce) if registered else self._topics.get(topic)
        settles_in = max(0.0, self._unsettled_until - now)
        return PresenceSnapshot(
            members=dict(state.info) if state is not None else {},
            partial=settles_in > 0 or not registered,
            settles_in=settles_in,
            registered=registered,
        )

    def count(self, topic: str, announce: Announcements) -> int:
        """How many members ``topic`` has on live processes, after sweeping the dead ones."""
        state = self._sweep(topic, announce)
        return len(state.holders) if state is not None else 0

    def sync(
        self, topic: str, process: str, members: dict[str, bytes], announce: Announcements
    ) -> None:
        """Make ``process``'s members of ``topic`` exactly ``members``."""
        state = self._topics.setdefault(topic, _Topic())
        for member in list(state.local.get(process, ())):
            if member not in members:
                self._remove(topic, state, process, member, announce)
        for member, info in members.items():
            self._add(topic, state, process, member, info, announce)
        self._forget_if_empty(topic, state)

    def sweep(
        self, process: str, topics: dict[str, int], announce: dict[str, Announcements]
    ) -> list[str]:
        """Sweep dead processes out of ``topics``; return those where ``process`` differs."""
        differ = []
        for topic, expected in topics.items():
            state = self._sweep(topic, announce[topic])
            held = len(state.local.get(process, ())) if state is not None else 0
            if held != expected:
                differ.append(topic)
        return differ

    def _add(
        self,
        topic: str,
        state: _Topic,
        process: str,
        member: str,
        info: bytes,
        announce: Announcements,
    ) -> bool:
        mine = state.local.setdefault(process, set())
        if member in mine:
            return False
        mine.add(member)
        holders = state.holders.get(member, 0) + 1
        state.holders[member] = holders
        if holders > 1:
            return False
        state.info[member] = info
        prefix, suffix = announce.join
        self._publish(topic, prefix + info + suffix)
        return True

    def _remove(
        self, topic: str, state: _Topic, process: str, member: str, announce: Announcements
    ) -> bool:
        mine = state.local.get(process)
        if mine is None or member not in mine:
            return False
        mine.discard(member)
        if not mine:
            del state.local[process]
        holders = state.holders.get(member, 0) - 1
        if holders > 0:
            state.holders[member] = holders
            return False
        state.holders.pop(member, None)
        info = state.info.pop(member, None)
        if info is not None:
            prefix, suffix = announce.leave
            self._publish(topic, prefix + info + suffix)
        return True

    def _sweep(self, topic: str, announce: Announcements) -> _Topic | None:
        state = self._topics.get(topic)
        if state is None:
            return None
        now = self._clock()
        for process in list(state.local):
            deadline = self._alive.get(process)
            if deadline is None or deadline < now:
                for member in list(state.local.get(process, ())):
                    self._remove(topic, state, process, member, announce)
        return state if not self._forget_if_empty(topic, state) else None

    def _forget_if_empty(self, topic: str, state: _Topic) -> bool:
        if state.local or state.holders:
            return False
        if self._topics.get(topic) is state:
            del self._topics[topic]
        return True


class SeenKeys:
    """Idempotency keys published per topic, each until its window ends.

    Expired keys are dropped as new ones arrive (oldest recorded first), so the table holds at
    most the keys of the longest window in use.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._keys: dict[tuple[str, str], tuple[float, Position | None]] = {}
        self._order: deque[tuple[float, tuple[str, str]]] = deque()

    def __len__(self) -> int:
        return len(self._keys)

    def seen(self, topic: str, key: str) -> tuple[bool, Position | None]:
        """Whether ``key`` was recorded on ``topic`` within its window, and its position."""
        found = self._keys.get((topic, key))
        if found is None or found[0] <= self._clock():
            return False, None
        return True, found[1]

    def record(self, topic: str, key: str, window: float, position: Position | None) -> None:
        """Record ``key`` on ``topic`` for ``window`` seconds."""
        now = self._clock()
        order = self._order
        while order and order[0][0] <= now:
            expires, old = order.popleft()
            if self._keys.get(old, (None,))[0] == expires:
                del self._keys[old]
        expires = now + window
        self._keys[topic, key] = (expires, position)
        order.append((expires, (topic, key)))
