"""The bound on topics keeping history, for the NATS broker: one record per group.

A stream per prefix (``<stream>_quota``, see `fastapi_channels.brokers._nats_subjects`) keeps,
for each group of a bounded retention (``P.q.<group>``), the topics counted in it and when each
was admitted (this host's clock). A topic that has no current epoch is admitted before its
first append (or the marker a read appends): admitting it is a write on the condition that the
group's record is still the one read, so processes admitting at once never count more than
``max_topics``; the one that lost the race reads again.

When the group is full, its topics are looked at in the history stream: a topic whose last
message is older than ``keep`` no longer counts, nor does one admitted more than ``timeout``
ago that never stored anything (its publisher failed between admitting and appending). Unlike
the Redis broker, which counts and appends in one script, admitting and appending are two
steps: a process that dies between them leaves the topic counted for ``timeout`` more.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, Protocol

from nats.js.api import StorageType, StreamConfig

from fastapi_channels.brokers._nats_records import (
    EXPECTED,
    Conflict,
    Missing,
    ensure_stream,
    read_last,
    write,
)
from fastapi_channels.brokers._nats_subjects import Subjects
from fastapi_channels.brokers.stores import Retention
from fastapi_channels.wire.errors import BrokerError, HistoryFull

if TYPE_CHECKING:
    from nats.js import JetStreamContext

__all__ = ["LastStored", "NatsQuota"]

_WHAT: Final = "the history quota stream"


class LastStored(Protocol):
    """What the quota needs of a topic's last stored message."""

    @property
    def stamp(self) -> float: ...

    def current(self, retention: Retention, now: float) -> bool: ...


LastOf = Callable[[str], Awaitable[LastStored | None]]


class NatsQuota:
    """The groups of bounded retentions of one prefix, in one JetStream stream.

    Args:
        js: the JetStream context of the broker's connection.
        subjects: the prefix's subjects.
        storage: the history's storage type.
        timeout: seconds an admitted topic may take to store its first message.
    """

    def __init__(
        self, js: JetStreamContext, subjects: Subjects, storage: StorageType, timeout: float
    ) -> None:
        self._js = js
        self._subjects = subjects
        self._config = StreamConfig(
            name=subjects.quota_stream,
            subjects=[subjects.quota_wildcard],
            storage=storage,
            max_msgs_per_subject=1,
            allow_direct=True,
        )
        self._timeout = timeout
        self._ready = False

    def forget(self) -> None:
        """Make sure the stream exists again before the next use."""
        self._ready = False

    async def admit(self, topic: str, retention: Retention, last_of: LastOf) -> None:
        """Count ``topic`` in its group, unless the group is full.

        Called for a topic that has no current epoch, before it stores anything; a topic
        counted already stays counted. Retries after a conflict until the caller's deadline.

        Raises:
            HistoryFull: the group has ``max_topics`` topics holding history.
            BrokerError: NATS failed.
        """
        if not retention.max_topics:
            return
        subject = self._subjects.quota(retention.group)
        while True:
            if not self._ready:
                await ensure_stream(self._js, self._config, _WHAT)
                self._ready = True
            try:
                record = await read_last(self._js, self._subjects.quota_stream, subject, _WHAT)
                counted = _decode(record.data if record is not None else None)
                now = time.time()
                if topic in counted:
                    return
                if len(counted) >= retention.max_topics:
                    counted = await self._holding(counted, retention, last_of, now)
                    if len(counted) >= retention.max_topics:
                        raise HistoryFull(
                            f"{retention.group!r} has {retention.max_topics} channels with "
                            "history already"
                        )
                counted[topic] = now
                headers = {EXPECTED: str(record.seq if record is not None else 0)}
                data = json.dumps(counted).encode()
                await write(self._js, self._subjects.quota_stream, subject, data, headers, _WHAT)
                return
            except Conflict:
                continue
            except Missing:
                self._ready = False

    async def _holding(
        self, counted: dict[str, float], retention: Retention, last_of: LastOf, now: float
    ) -> dict[str, float]:
        """The counted topics that still hold history (or may be about to)."""
        topics = list(counted)
        lasts = await asyncio.gather(*(last_of(topic) for topic in topics))
        holding = {}
        for topic, last in zip(topics, lasts, strict=True):
            admitted = counted[topic]
            if last is not None and last.current(retention, now):
                holding[topic] = admitted
            elif (last is None or last.stamp < admitted) and now - admitted < self._timeout:
                holding[topic] = admitted  # admitted, its first message not stored yet
        return holding


def _decode(data: bytes | None) -> dict[str, float]:
    if not data:
        return {}
    try:
        found = json.loads(data)
        return {str(topic): float(at) for topic, at in found.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise BrokerError(f"an unreadable history quota record: {exc}") from exc
