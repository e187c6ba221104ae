"""Stored messages as brokers keep them: positions, retention, and what a read finds.

Plain values shared by the brokers (which store and read them) and the server (which puts
positions on the wire and decides recovery, see `fastapi_channels.wire.history`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Position", "Retention", "Stored", "StoredEntry"]


@dataclass(frozen=True, slots=True)
class Position:
    """Where a message stands in a stored topic's history.

    Attributes:
        offset: the message's number in the topic, from 1, without gaps: each stored message
            gets the previous offset plus one.
        epoch: names the history the offsets belong to. It changes when the history is lost
            (a Redis restart without persistence, a topic idle past its retention), so an
            offset is only meaningful together with its epoch.
    """

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Retention:
    """How much of a stored topic's history is kept.

    Attributes:
        size: the most messages kept (the newest ones).
        ttl: seconds a message is kept after it was published; ``None`` keeps it until
            ``size`` pushes it out.
        keep: seconds the topic's position (its epoch and last offset) is kept after its last
            publish; its history goes too, and a topic published again after that starts a
            new epoch.
        max_topics: the most topics of ``group`` that may hold history at once (``None``: no
            bound). A topic holds history from its first publish (or the read that gives it
            an epoch) until ``keep`` after its last publish. A publish that would make one
            too many raises `HistoryFull`; a read of a topic without history then answers a
            fresh epoch without keeping it.
        group: the name topics are counted under for ``max_topics`` (the server uses the
            listener's pattern); topics of one group must share one retention.
    """

    size: int
    ttl: float | None
    keep: float
    max_topics: int | None = None
    group: str = ""


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One retained message of a stored topic: its offset and its bytes."""

    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Stored:
    """What `Broker.read_stored` found.

    Attributes:
        epoch: the topic's current epoch.
        top: the offset of the topic's last message (0 when none was ever published).
        entries: the retained messages after the requested offset, oldest first. Offsets are
            consecutive and end at ``top`` (when any message is retained at all).
    """

    epoch: str
    top: int
    entries: list[StoredEntry]
