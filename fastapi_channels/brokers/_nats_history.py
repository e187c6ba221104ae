"""History in a JetStream stream, for the NATS broker: positions, appends and reads.

One stream per prefix captures ``P.s.*`` (see `fastapi_channels.brokers._nats_subjects`) and
republishes each message it stores to ``P.m.<token>``, where every process subscribes: so a
message is delivered only once stored, and every process receives a topic's stored messages in
the stream's order, which is their offset order.

Each stored message carries its position in two headers, ``Fc-Offset`` and ``Fc-Epoch``.
Offsets have no gaps because every append is conditional: it names the stream sequence of the
topic's last message (``Nats-Expected-Last-Subject-Sequence``), and the stream refuses it when
another process appended meanwhile; the append is then retried after reading the new last
message. That header stays on the stored message, so each message also points at the one
before it, and a read walks back from the last message only as far as it needs.

A topic's epoch lives on its messages. A topic without messages (never published, or all of
them gone through the stream's limits) gets a new epoch; so does a topic whose last message is
older than the retention's ``keep``. A read that finds no valid epoch appends a marker (offset
0, no data, never delivered) so that the epoch it returns is the one the next append uses.
Times are compared between the stream's clock (its message timestamps) and this host's: hosts
whose clocks disagree by seconds see ``ttl`` and ``keep`` move by as much.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from nats.js.api import RePublish, StorageType, StreamConfig
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

from fastapi_channels.brokers._nats_quota import NatsQuota
from fastapi_channels.brokers._nats_records import ERRORS, ensure_stream, failure, stamp
from fastapi_channels.brokers._nats_subjects import Subjects
from fastapi_channels.brokers.stores import Position, Retention, Stored, StoredEntry
from fastapi_channels.wire.errors import BrokerError, HistoryFull, OutcomeUnknown

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.api import RawStreamMsg

__all__ = ["EPOCH", "OFFSET", "NatsHistory", "position_of"]

OFFSET: Final = "Fc-Offset"
EPOCH: Final = "Fc-Epoch"
_PREVIOUS: Final = "Nats-Expected-Last-Subject-Sequence"
_MESSAGE_ID: Final = "Nats-Msg-Id"
_WRONG_LAST_SEQUENCE: Final = 10071
_CACHED_TOPICS: Final = 10_000


def position_of(headers: dict[str, str] | None) -> Position | None:
    """The position a stored message's headers carry, or None for a plain message.

    Raises:
        ValueError: the headers name a position that is not one (a foreign publisher).
    """
    if not headers or OFFSET not in headers:
        return None
    epoch = headers.get(EPOCH)
    if not epoch:
        raise ValueError("a stored message without its epoch")
    return Position(int(headers[OFFSET]), epoch)


@dataclass(frozen=True, slots=True)
class _Last:
    """A topic's last stored message: where it is, its position, and when it was stored."""

    sequence: int
    offset: int
    epoch: str
    stamp: float

    def current(self, retention: Retention, now: float) -> bool:
        """Whether its epoch still holds (the topic was not idle past ``keep``)."""
        return now - self.stamp <= retention.keep


@dataclass(slots=True)
class _Queue:
    """This process's appends to one topic, one at a time."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class NatsHistory:
    """Stored topics of one prefix in one JetStream stream.

    Args:
        js: the JetStream context of the broker's connection.
        subjects: the prefix's subjects and stream name.
        storage: ``"file"`` (survives a server restart) or ``"memory"``.
        max_per_topic: the most messages the stream keeps per topic; larger sizes are cut to it.
        max_age: seconds the stream keeps any message (None: no limit).
        timeout: seconds one JetStream request may take.
    """

    def __init__(
        self,
        js: JetStreamContext,
        subjects: Subjects,
        *,
        storage: str,
        max_per_topic: int,
        max_age: float | None,
        timeout: float,
    ) -> None:
        self._js = js
        self._subjects = subjects
        self._config = StreamConfig(
            name=subjects.stream,
            subjects=[subjects.stored_wildcard],
            storage=StorageType(storage),
            max_msgs_per_subject=max_per_topic,
            max_age=max_age or 0.0,
            allow_direct=True,
            republish=RePublish(src=subjects.stored_wildcard, dest=subjects.republish_to()),
        )
        self._timeout = timeout
        self._quota = NatsQuota(js, subjects, StorageType(storage), timeout)
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self._queues: dict[str, _Queue] = {}
        self._last: OrderedDict[str, _Last] = OrderedDict()

    async def publish_stored(self, topic: str, data: bytes, retention: Retention) -> Position:
        """Append ``data`` to ``topic`` at the next offset; the stream then republishes it.

        Appends of one process to one topic queue behind each other; an append that lost the
        race to another process reads the new last message and tries again, until ``timeout``.

        Raises:
            BrokerError: the stream did not take it in time (then no one received it).
        """
        position, _ = await self._publish(topic, data, retention, None)
        return position

    async def publish_stored_once(
        self, topic: str, data: bytes, retention: Retention, message_id: str
    ) -> tuple[Position, bool]:
        """Append as `publish_stored` does, unless the stream has a message of ``message_id``.

        The stream remembers message ids for its duplicate window (two minutes): an append
        whose id it saw stores nothing, and this returns the first message's position. Returns
        the position and whether it was such a duplicate.

        Raises:
            OutcomeUnknown: the stream did not answer in time; it may have stored the message.
            BrokerError: the stream refused the message; nothing was stored.
        """
        return await self._publish(topic, data, retention, message_id)

    async def _publish(
        self, topic: str, data: bytes, retention: Retention, message_id: str | None
    ) -> tuple[Position, bool]:
        queue = self._queues.get(topic) or self._queues.setdefault(topic, _Queue())
        queue.users += 1
        try:
            async with queue.lock, asyncio.timeout(self._timeout):
                while True:
                    last = self._last.get(topic) or await self._fetch_last(topic)
                    if last is not None and last.current(retention, time.time()):
                        offset, epoch = last.offset + 1, last.epoch
                    else:
                        await self._quota.admit(topic, retention, self._fetch_last)
                        offset, epoch = 1, _new_epoch()
                    appended = await self._append(topic, data, offset, epoch, last, message_id)
                    if appended is not None:
                        return appended
        except TimeoutError as exc:
            if message_id is not None:
                raise OutcomeUnknown(f"the history stream did not answer in time: {exc}") from exc
            raise BrokerError(f"the history stream did not store a message in time: {exc}") from exc
        finally:
            queue.users -= 1
            if not queue.users:
                del self._queues[topic]

    async def read_stored(self, topic: str, retention: Retention, after: int) -> Stored:
        """Read ``topic``'s retained messages above ``after``, oldest first.

        Costs one request for the last message, then one per message returned (walking back
        from the last one); a topic without a valid epoch costs an append (its marker).

        Raises:
            BrokerError: the stream could not be read in time.
        """
        try:
            async with asyncio.timeout(self._timeout):
                while True:
                    last = await self._fetch_last(topic)
                    now = time.time()
                    if last is not None and last.current(retention, now):
                        break
                    try:
                        await self._quota.admit(topic, retention, self._fetch_last)
                    except HistoryFull:
                        return Stored(epoch=_new_epoch(), top=0, entries=[])  # not kept
                    if await self._append(topic, b"", 0, _new_epoch(), last) is not None:
                        last = self._last[topic]
                        break
                entries = await self._walk(last, retention, after, now)
        except TimeoutError as exc:
            raise BrokerError(f"the history stream could not be read in time: {exc}") from exc
        return Stored(epoch=last.epoch, top=last.offset, entries=entries)

    async def _walk(
        self, last: _Last, retention: Retention, after: int, now: float
    ) -> list[StoredEntry]:
        """The retained messages of ``last``'s epoch above ``after``, walking back from it."""
        first = max(after, last.offset - retention.size) + 1
        oldest = now - retention.ttl if retention.ttl is not None else None
        entries: list[StoredEntry] = []
        sequence, offset = last.sequence, last.offset
        while offset >= first and sequence > 0:
            message = await self._get(seq=sequence)
            if message is None:
                break  # removed by the stream's limits: what is older is gone too
            headers = message.headers or {}
            try:
                position = position_of(headers)
            except ValueError:
                break
            if position != Position(offset, last.epoch):
                break
            if oldest is not None and stamp(message) < oldest:
                break
            entries.append(StoredEntry(offset, message.data or b""))
            sequence, offset = int(headers.get(_PREVIOUS, "0")), offset - 1
        entries.reverse()
        return entries

    async def _append(
        self,
        topic: str,
        data: bytes,
        offset: int,
        epoch: str,
        last: _Last | None,
        message_id: str | None = None,
    ) -> tuple[Position, bool] | None:
        """Append at ``offset`` if ``last`` is still the topic's last message.

        Returns the position and False; with ``message_id`` that the stream saw already, the
        first message's position and True; None when another process appended first.
        """
        headers = {OFFSET: str(offset), EPOCH: epoch, _PREVIOUS: str(last.sequence if last else 0)}
        if message_id is not None:
            headers[_MESSAGE_ID] = message_id
        await self._ensure()
        try:
            ack = await self._js.publish(
                self._subjects.stored(topic), data, headers=headers, stream=self._subjects.stream
            )
        except APIError as exc:
            self._last.pop(topic, None)
            if exc.err_code == _WRONG_LAST_SEQUENCE:
                return None  # another process appended first: read its message, retry
            raise failure("the history stream refused a message", exc) from exc
        except NoStreamResponseError as exc:
            self._ready = False  # the stream was deleted: create it again, and retry
            self._last.pop(topic, None)
            raise failure("the history stream is missing", exc) from exc
        except ERRORS as exc:
            self._last.pop(topic, None)
            if message_id is not None:
                raise OutcomeUnknown(f"the history stream did not answer: {exc}") from exc
            raise failure("the history stream did not answer", exc) from exc
        if ack.duplicate:
            self._last.pop(topic, None)
            first = await self._get(seq=ack.seq)
            found = position_of(first.headers) if first is not None else None
            if found is None:
                raise BrokerError(f"the first message of id {message_id!r} is gone")
            return found, True
        self._remember(topic, _Last(ack.seq, offset, epoch, time.time()))
        return Position(offset, epoch), False

    async def _fetch_last(self, topic: str) -> _Last | None:
        """Read ``topic``'s last stored message from the stream (None when it has none)."""
        await self._ensure()
        message = await self._get(subject=self._subjects.stored(topic))
        if message is None or message.seq is None:
            self._last.pop(topic, None)
            return None
        try:
            position = position_of(message.headers)
        except ValueError:
            position = None
        if position is None:
            raise BrokerError(f"a message without a position is in the history of {topic!r}")
        last = _Last(message.seq, position.offset, position.epoch, stamp(message))
        self._remember(topic, last)
        return last

    async def _get(self, *, seq: int = 0, subject: str | None = None) -> RawStreamMsg | None:
        try:
            if subject is not None:
                return await self._js.get_last_msg(self._subjects.stream, subject, direct=True)
            return await self._js.get_msg(self._subjects.stream, seq=seq, direct=True)
        except NotFoundError:
            return None
        except NoStreamResponseError as exc:
            self._ready = False
            raise failure("the history stream is missing", exc) from exc
        except ERRORS as exc:
            raise failure("the history stream did not answer", exc) from exc

    def _remember(self, topic: str, last: _Last) -> None:
        self._last[topic] = last
        self._last.move_to_end(topic)
        if len(self._last) > _CACHED_TOPICS:
            self._last.popitem(last=False)

    async def _ensure(self) -> None:
        """Create the stream (or bring its configuration up to date) once per connection."""
        if self._ready:
            return
        async with self._ready_lock:
            if not self._ready:
                await ensure_stream(self._js, self._config, "the history stream")
                self._ready = True

    def forget(self) -> None:
        """Drop what is known of the stream: after a reconnection, read it again."""
        self._ready = False
        self._quota.forget()
        self._last.clear()


def _new_epoch() -> str:
    return secrets.token_hex(8)
