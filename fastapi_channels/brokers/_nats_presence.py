"""Presence in a JetStream key-value bucket, for the NATS broker: records, leases, announcements.

One bucket per prefix (``<stream>_presence``, see `fastapi_channels.brokers._nats_subjects`)
holds three kinds of keys:

* ``t.<token>``: a presence topic's record, JSON: each member's info and the processes holding
  it, in join order. A topic without members has no record (a delete marker);
* ``alive.<process>``: a process's lease, its renewal timeout in seconds. The process is alive
  while the lease's time stamp (the stream's clock) plus that timeout is not past; retiring
  writes a delete marker, so the lease is gone at once;
* ``unsettled``: written by the first process that, its previous renewal having succeeded,
  finds its lease missing altogether: the bucket lost its records (a NATS restart with memory
  storage, a deleted bucket). Member lists read within its timeout are partial.

Every change of a record is conditional on the record read before it
(``Nats-Expected-Last-Subject-Sequence``): a change that lost the race to another process reads
the record again and is redone, so processes never overwrite each other. The change carries the
announcements it makes (joins and leaves) in a header, ``Fc-Announce``, and the bucket's stream
republishes the headers of each record change to the topic's message subject: every interested
process receives a topic's announcements in the stream's order, and only once the change is
stored, so the change and its announcements are one step.

Any process sweeps a topic when it reads it: the members whose every holder is dead leave, with
their leave announced; two processes sweeping at once cannot both announce a leave, as only one
of the two conditional writes is taken. Times are compared between the stream's clock and this
host's, as for history: hosts whose clocks disagree by seconds see the timeout move by as much.

Records expire ``keep`` after their last write (the bucket's age limit); a process rewrites the
records it uses before that, so only those of topics nobody uses any more go.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, TypeVar

from nats.js.api import DiscardPolicy, RePublish, StorageType, StreamConfig

from fastapi_channels.brokers._nats_records import (
    EXPECTED,
    Conflict,
    Missing,
    ensure_stream,
    read_last,
    stamp,
    write,
)
from fastapi_channels.brokers._nats_subjects import Subjects
from fastapi_channels.brokers.stores import Announcements, PresenceSnapshot
from fastapi_channels.wire.errors import BrokerError

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.api import RawStreamMsg

__all__ = ["ANNOUNCE", "KEEP", "NatsPresence", "announcements_of"]

ANNOUNCE: Final = "Fc-Announce"
KEEP: Final = 24 * 3600.0
"""Seconds a record is kept after its last write: the bucket's age limit."""

_WHAT: Final = "the presence bucket"
_OPERATION: Final = "KV-Operation"

_CONCURRENT_SWEEPS: Final = 32
"""Topics one renewal sweeps at once."""

T = TypeVar("T")


def announcements_of(headers: Mapping[str, str]) -> list[bytes]:
    """The announcement packets a republished record change carries, in order.

    Raises:
        ValueError: the header is not one this module writes.
    """
    value = headers.get(ANNOUNCE)
    if not value:
        return []
    try:
        return [base64.b64decode(part, validate=True) for part in value.split(",")]
    except binascii.Error as exc:
        raise ValueError(f"malformed {ANNOUNCE} header") from exc


@dataclass(slots=True)
class _Record:
    """A topic's members as one read found them: key to info and holders, in join order."""

    sequence: int = 0
    stamp: float = 0.0
    info: dict[str, bytes] = field(default_factory=dict)
    holders: dict[str, list[str]] = field(default_factory=dict)
    said: list[bytes] = field(default_factory=list)
    changed: bool = False

    def add(self, member: str, info: bytes, process: str, announce: Announcements) -> bool:
        """Let ``process`` hold ``member``; return whether the member joined."""
        holders = self.holders.setdefault(member, [])
        if process in holders:
            return False
        holders.append(process)
        self.changed = True
        if len(holders) > 1:
            return False
        self.info[member] = info
        self.said.append(announce.join[0] + info + announce.join[1])
        return True

    def remove(self, member: str, process: str, announce: Announcements) -> bool:
        """Let ``process`` release ``member``; return whether the member left."""
        holders = self.holders.get(member, [])
        if process not in holders:
            return False
        holders.remove(process)
        self.changed = True
        if holders:
            return False
        del self.holders[member]
        info = self.info.pop(member, b"")
        self.said.append(announce.leave[0] + info + announce.leave[1])
        return True

    def held_by(self, process: str) -> list[str]:
        return [member for member, holders in self.holders.items() if process in holders]

    def encode(self) -> bytes:
        return json.dumps(
            {
                member: [base64.b64encode(self.info.get(member, b"")).decode(), holders]
                for member, holders in self.holders.items()
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, message: RawStreamMsg) -> _Record:
        record = cls(sequence=message.seq or 0, stamp=stamp(message))
        if (message.headers or {}).get(_OPERATION) or not message.data:
            return record
        try:
            for member, (info, holders) in json.loads(message.data).items():
                record.info[member] = base64.b64decode(info)
                record.holders[member] = list(holders)
        except (ValueError, TypeError) as exc:
            raise BrokerError(f"an unreadable presence record: {exc}") from exc
        return record


class NatsPresence:
    """Presence topics of one prefix in one JetStream key-value bucket.

    Args:
        js: the JetStream context of the broker's connection.
        subjects: the prefix's subjects and bucket name.
        storage: ``"memory"`` (lost when NATS restarts: lists are partial for one timeout while
            processes register again) or ``"file"``.
        process: this process's name among the processes (a subject token).
        timeout: seconds one operation (with its retries after conflicts) may take.
    """

    def __init__(
        self,
        js: JetStreamContext,
        subjects: Subjects,
        *,
        process: str,
        storage: str,
        timeout: float,
    ) -> None:
        self._js = js
        self._subjects = subjects
        self._config = StreamConfig(
            name=subjects.presence_stream,
            subjects=[subjects.presence_wildcard],
            storage=StorageType(storage),
            max_msgs_per_subject=1,
            max_age=KEEP,
            discard=DiscardPolicy.NEW,
            allow_rollup_hdrs=True,
            deny_delete=True,
            allow_direct=True,
            republish=RePublish(
                src=subjects.presence_topics, dest=subjects.republish_to(), headers_only=True
            ),
        )
        self._timeout = timeout
        self.process = process
        self._ready = False
        self._ready_lock = asyncio.Lock()

    def forget(self) -> None:
        """Drop what is known of the bucket: after a reconnection, make sure it exists again."""
        self._ready = False

    # ------------------------------------------------------------------ operations

    async def update(
        self,
        topic: str,
        join: Mapping[str, bytes],
        leave: Collection[str],
        announce: Announcements,
    ) -> tuple[list[str], list[str]]:
        """Release ``leave`` and hold ``join`` for this process; return who left and joined."""

        async def change(record: _Record) -> tuple[list[str], list[str]]:
            left = [m for m in leave if record.remove(m, self.process, announce)]
            joined = [m for m, info in join.items() if record.add(m, info, self.process, announce)]
            return joined, left

        return await self._change(topic, change)

    async def sync(self, topic: str, members: dict[str, bytes], announce: Announcements) -> None:
        """Make this process's members of ``topic`` exactly ``members``."""

        async def change(record: _Record) -> None:
            for member in record.held_by(self.process):
                if member not in members:
                    record.remove(member, self.process, announce)
            for member, info in members.items():
                record.add(member, info, self.process, announce)

        await self._change(topic, change)

    async def members(self, topic: str, announce: Announcements) -> dict[str, bytes]:
        """Sweep ``topic``, then return its members."""
        record = await self._change(topic, self._sweeper(announce))
        return dict(record.info)

    async def snapshot(self, topic: str, announce: Announcements) -> PresenceSnapshot:
        """Sweep ``topic`` if this process is alive, then return its members and if complete."""

        async def look() -> tuple[bool, RawStreamMsg | None]:
            return await self._alive_now(self.process), await self._read(self._subjects.unsettled)

        registered, unsettled = await self._retrying("read presence", look)
        settles_in = 0.0
        if unsettled is not None and not (unsettled.headers or {}).get(_OPERATION):
            settles_in = max(0.0, stamp(unsettled) + _seconds(unsettled) - time.time())
        if registered:
            record = await self._change(topic, self._sweeper(announce))
        else:
            record = await self._retrying("read presence", lambda: self._record(topic))
        return PresenceSnapshot(
            members=dict(record.info),
            partial=settles_in > 0 or not registered,
            settles_in=settles_in,
            registered=registered,
        )

    async def count(self, topic: str, announce: Announcements) -> int:
        """Sweep ``topic``, then count its members."""
        return len(await self.members(topic, announce))

    async def sweep(self, topics: dict[str, int], announce: dict[str, Announcements]) -> list[str]:
        """Sweep each topic; return those where this process holds another count.

        Topics are swept ``_CONCURRENT_SWEEPS`` at a time, and each process's lease is read once
        for all of them.

        A record that is older than half of ``keep`` is written again, so it does not expire
        while used.
        """

        async def one(topic: str) -> bool:
            async with limit:
                sweep = self._sweeper(announce[topic], refresh=True, alive=alive)
                record = await self._change(topic, sweep)
            return len(record.held_by(self.process)) != topics[topic]

        alive: dict[str, bool] = {}  # each process's lease is read once for every topic
        limit = asyncio.Semaphore(_CONCURRENT_SWEEPS)
        differ = await asyncio.gather(*(one(topic) for topic in topics))
        return [topic for topic, differs in zip(topics, differ, strict=True) if differs]

    async def renew(self, timeout: float, was_alive: bool) -> bool:
        """Write this process's lease for ``timeout`` seconds; return whether it was alive.

        A process whose previous renewal succeeded and whose lease is missing altogether (not
        expired, not retired: gone) found the bucket's loss: it writes ``unsettled``, unless a
        record of this loss exists already.
        """

        async def write() -> bool:
            lease = await self._read(self._subjects.lease(self.process))
            await self._write(self._subjects.lease(self.process), _text(timeout))
            if was_alive and lease is None:
                with contextlib.suppress(Conflict):  # another process found it first
                    await self._write(self._subjects.unsettled, _text(timeout), after=0)
            return lease is not None and _lease_alive(lease)

        return await self._retrying("renew the presence lease", write)

    async def retire(self) -> None:
        """End this process's lease at once (a delete marker)."""
        await self._retrying(
            "retire the presence lease",
            lambda: self._write(self._subjects.lease(self.process), b"", delete=True),
        )

    # ------------------------------------------------------------------ steps

    def _sweeper(
        self,
        announce: Announcements,
        *,
        refresh: bool = False,
        alive: dict[str, bool] | None = None,
    ) -> Callable[[_Record], Awaitable[_Record]]:
        return _Sweep(self, announce, refresh, {} if alive is None else alive).apply

    async def _change(self, topic: str, change: Callable[[_Record], Awaitable[T]]) -> T:
        """Apply ``change`` to ``topic``'s record, conditionally, until it is taken."""

        async def step() -> T:
            record = await self._record(topic)
            result = await change(record)
            if record.changed:
                await self._write(
                    self._subjects.presence(topic),
                    record.encode() if record.holders else b"",
                    after=record.sequence,
                    delete=not record.holders,
                    said=record.said,
                )
            return result

        return await self._retrying("change presence", step)

    async def _retrying(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        """Run ``step`` until it is not refused for a conflict or a missing bucket.

        A conflict (another process wrote first) runs it again on what is stored now; a
        missing bucket is created again first.

        Raises:
            BrokerError: ``timeout`` passed (naming ``what``), or NATS failed.
        """
        async with self._deadline(what):
            while True:
                await self._ensure()
                try:
                    return await step()
                except Conflict:
                    continue
                except Missing:
                    self._ready = False

    async def _record(self, topic: str) -> _Record:
        message = await self._read(self._subjects.presence(topic))
        return _Record() if message is None else _Record.decode(message)

    async def _alive_now(self, process: str) -> bool:
        lease = await self._read(self._subjects.lease(process))
        return lease is not None and _lease_alive(lease)

    async def _read(self, subject: str) -> RawStreamMsg | None:
        return await read_last(self._js, self._subjects.presence_stream, subject, _WHAT)

    async def _write(
        self,
        subject: str,
        data: bytes,
        *,
        after: int | None = None,
        delete: bool = False,
        said: list[bytes] | None = None,
    ) -> None:
        """Write ``data`` on ``subject``; with ``after``, only if that is its last sequence."""
        headers: dict[str, str] = {}
        if after is not None:
            headers[EXPECTED] = str(after)
        if delete:
            headers[_OPERATION] = "DEL"
        if said:
            headers[ANNOUNCE] = ",".join(base64.b64encode(packet).decode() for packet in said)
        await write(self._js, self._subjects.presence_stream, subject, data, headers, _WHAT)

    async def _ensure(self) -> None:
        """Create the bucket (or bring its configuration up to date) once per connection."""
        if self._ready:
            return
        async with self._ready_lock:
            if not self._ready:
                await ensure_stream(self._js, self._config, "the presence bucket")
                self._ready = True

    def _deadline(self, what: str) -> _Deadline:
        return _Deadline(self._timeout, what)


class _Sweep:
    """A change that removes the holders that are dead from a record (and their members)."""

    def __init__(
        self,
        presence: NatsPresence,
        announce: Announcements,
        refresh: bool,
        alive: dict[str, bool],
    ) -> None:
        self._presence = presence
        self._announce = announce
        self._refresh = refresh
        self._alive = alive  # process to whether its lease holds, as read once

    async def apply(self, record: _Record) -> _Record:
        processes = {p for holders in record.holders.values() for p in holders} - set(self._alive)
        found = await asyncio.gather(*(self._presence._alive_now(p) for p in processes))
        self._alive.update(zip(processes, found, strict=True))
        for member, holders in list(record.holders.items()):
            for process in list(holders):
                if not self._alive[process]:
                    record.remove(member, process, self._announce)
        if self._refresh and record.holders and time.time() - record.stamp > KEEP / 2:
            record.changed = True  # written again, announcing nothing: it does not expire
        return record


class _Deadline:
    """``asyncio.timeout`` that raises `BrokerError` naming what did not finish in time."""

    def __init__(self, seconds: float, what: str) -> None:
        self._timeout = asyncio.timeout(seconds)
        self._what = what

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()

    async def __aexit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        try:
            await self._timeout.__aexit__(kind, exc, tb)  # type: ignore[arg-type]
        except TimeoutError as timeout:
            raise BrokerError(f"could not {self._what} in time") from timeout


def _lease_alive(lease: RawStreamMsg) -> bool:
    if (lease.headers or {}).get(_OPERATION):
        return False  # retired
    return stamp(lease) + _seconds(lease) >= time.time()


def _seconds(message: RawStreamMsg) -> float:
    try:
        return float(message.data or b"0")
    except ValueError:
        return 0.0


def _text(seconds: float) -> bytes:
    return f"{seconds:.3f}".encode()
