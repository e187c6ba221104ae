"""Idempotent publishing on JetStream, for the NATS broker: a record per (topic, key).

One stream per prefix (``<stream>_once``, see `fastapi_channels.brokers._nats_subjects`) keeps
the last record of each key (``P.k.<topic>.<key>``), which says, in a header, the window it was
published with, counted from the time the stream stored it. A publish reads the key's record:
while its window is open, the publish is a duplicate. Otherwise the message is published with a
message id made of the topic, the key and the sequence of that record, then the record is
written, on the condition that the key's last record is still the one read
(``Nats-Expected-Last-Subject-Sequence``).

The message goes through a stream that drops a message whose id it saw within its duplicate
window (two minutes) and answers the first one's sequence: the idempotency stream itself for a
plain message (``P.o.<topic>``, republished to the topic's subject, so every process, this one
included, receives it from NATS), the history stream for a stored one. So processes publishing
one key at once all use one id, and one message is taken; and a process that stops between the
message and its record leaves a key that a retry within the duplicate window still finds (by
the id), publishing nothing. A retry after that window, of a publish whose record was never
written, publishes again.

The stream keeps records for the longest window it was asked for (its age limit is only ever
raised), and one message per topic. With ``history_storage="memory"``, a NATS restart forgets
the keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Final

from nats.js.api import RePublish, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from fastapi_channels.brokers._nats_history import NatsHistory
from fastapi_channels.brokers._nats_records import (
    ERRORS,
    EXPECTED,
    Conflict,
    Missing,
    ensure_stream,
    failure,
    read_last,
    stamp,
    write,
)
from fastapi_channels.brokers._nats_subjects import Subjects
from fastapi_channels.brokers.idempotency import Published
from fastapi_channels.brokers.stores import Position, Retention
from fastapi_channels.wire.errors import BrokerError, OutcomeUnknown

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.api import RawStreamMsg

__all__ = ["NatsOnce"]

WINDOW: Final = "Fc-Window"
_WHAT: Final = "the idempotency stream"
_MESSAGE_ID: Final = "Nats-Msg-Id"
_MIN_AGE: Final = 120.0
"""The stream's least age limit: its duplicate window, two minutes, may not exceed it."""


class NatsOnce:
    """The idempotency records of one prefix, in one JetStream stream.

    Args:
        js: the JetStream context of the broker's connection.
        subjects: the prefix's subjects.
        history: the history of the same connection, for stored messages.
        storage: ``"file"`` or ``"memory"``.
        timeout: seconds one publish (with its retries after conflicts) may take.
    """

    def __init__(
        self,
        js: JetStreamContext,
        subjects: Subjects,
        history: NatsHistory,
        *,
        storage: str,
        timeout: float,
    ) -> None:
        self._js = js
        self._subjects = subjects
        self._history = history
        self._storage = StorageType(storage)
        self._timeout = timeout
        self._age = 0.0  # the stream's age limit as last set; 0: not made sure of yet
        self._lock = asyncio.Lock()

    async def publish_once(
        self, topic: str, data: bytes, key: str, window: float, retention: Retention | None
    ) -> Published:
        """Publish (store, with ``retention``) unless ``key`` was on ``topic`` within ``window``.

        Raises:
            BrokerError: NATS refused, or could not be asked; nothing was published.
            OutcomeUnknown: NATS did not answer in time; the message may have been published.
        """
        try:
            async with asyncio.timeout(self._timeout):
                while True:
                    await self._ensure(window)
                    try:
                        return await self._publish(topic, data, key, window, retention)
                    except Conflict:
                        continue
                    except Missing:
                        self._age = 0.0
        except TimeoutError as exc:
            raise OutcomeUnknown("NATS did not answer in time; it may have published") from exc

    async def _publish(
        self, topic: str, data: bytes, key: str, window: float, retention: Retention | None
    ) -> Published:
        subject = self._subjects.once_record(topic, key)
        last = await self._read(subject)
        if last is not None and _current(last):
            return Published(duplicate=True, position=_position(last))
        message_id = json.dumps([topic, key, last.seq if last is not None else 0])
        position: Position | None = None
        if retention is None:
            duplicate = await self._send(topic, data, message_id)
        else:
            position, duplicate = await self._history.publish_stored_once(
                topic, data, retention, message_id
            )
        record = b"" if position is None else json.dumps([position.offset, position.epoch]).encode()
        with contextlib.suppress(Conflict):  # another process recorded it, by the same id
            await self._write(subject, record, window, last)
        return Published(duplicate=duplicate, position=position)

    async def _send(self, topic: str, data: bytes, message_id: str) -> bool:
        """Publish a plain message through the stream; return whether its id was seen."""
        headers = {_MESSAGE_ID: message_id}
        ack = await write(
            self._js,
            self._subjects.once_stream,
            self._subjects.once(topic),
            data,
            headers,
            _WHAT,
            OutcomeUnknown,
        )
        return bool(ack.duplicate)

    async def _read(self, subject: str) -> RawStreamMsg | None:
        return await read_last(self._js, self._subjects.once_stream, subject, _WHAT)

    async def _write(
        self, subject: str, data: bytes, window: float, last: RawStreamMsg | None
    ) -> None:
        headers = {WINDOW: f"{window:.3f}", EXPECTED: str(last.seq if last is not None else 0)}
        stream = self._subjects.once_stream
        await write(self._js, stream, subject, data, headers, _WHAT, OutcomeUnknown)

    async def _ensure(self, window: float) -> None:
        """Make sure the stream exists and keeps records at least ``window`` seconds."""
        if window <= self._age:
            return
        async with self._lock:
            if window <= self._age:
                return
            wanted = max(window, _MIN_AGE, self._age)
            try:
                info = await self._js.stream_info(self._subjects.once_stream)
                wanted = max(wanted, info.config.max_age or 0.0)
            except NotFoundError:
                pass
            except ERRORS as exc:
                raise failure("cannot create the idempotency stream", exc) from exc
            await ensure_stream(self._js, self._config(wanted), "the idempotency stream")
            self._age = wanted

    def _config(self, age: float) -> StreamConfig:
        subjects = self._subjects
        return StreamConfig(
            name=subjects.once_stream,
            subjects=[subjects.once_wildcard, subjects.once_records_wildcard],
            storage=self._storage,
            max_msgs_per_subject=1,
            max_age=age,
            allow_direct=True,
            republish=RePublish(src=subjects.once_wildcard, dest=subjects.republish_to()),
        )


def _current(record: RawStreamMsg) -> bool:
    """Whether ``record``'s window is still open."""
    try:
        window = float((record.headers or {}).get(WINDOW, "0"))
    except ValueError:
        window = 0.0
    return stamp(record) + window > time.time()


def _position(record: RawStreamMsg) -> Position | None:
    """The stored message's position a record holds (None for a plain message's)."""
    if not record.data:
        return None
    try:
        offset, epoch = json.loads(record.data)
        return Position(int(offset), str(epoch))
    except (ValueError, TypeError) as exc:
        raise BrokerError(f"an unreadable idempotency record: {exc}") from exc
