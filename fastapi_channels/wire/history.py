"""History channels: the declaration, positions on the wire, and recovery.

A channel listener with ``history = History(size=100, ttl=3600)`` keeps its channels' last
messages in the broker. Each broadcast on such a channel gets a `Position` (an offset,
counting from 1 without gaps, within an epoch) that travels with the packet as a top-level
``position`` field. A client that subscribes again with the last position it saw (``since``)
receives what it missed, in order and once, before live messages, or learns that recovery
failed (the gap is no longer retained, or the epoch changed) and should reload its state.

Channels without a history are untouched: their broadcasts are published as before, with no
store, no position and no extra work.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final

from fastapi_channels.wire.errors import ConfigurationError, ErrorCode, ProtocolError
from fastapi_channels.wire.stored import Position, Retention, Stored, StoredEntry

__all__ = [
    "History",
    "HistoryPage",
    "Position",
    "StoredMessage",
    "parse_since",
    "position_data",
    "recover",
    "with_position",
]

MAX_SIZE: Final = 100_000
"""The largest history a channel may keep."""
_MAX_EPOCH_LENGTH: Final = 64
NO_ENTRIES: Final = 2**53
"""An ``after`` offset above any real one: a read that wants only the channel's position."""


@dataclass(frozen=True, slots=True)
class History:
    """How much history a channel listener's channels keep; set it as the ``history`` attribute.

    Attributes:
        size: the most messages kept per channel (the newest ones).
        ttl: seconds a message stays recoverable after it was broadcast; ``None`` keeps it
            until ``size`` newer ones push it out.
        keep: seconds a channel's position (its epoch and last offset) is kept after its last
            broadcast. A client coming back later fails to recover; an idle channel broadcast
            again after that starts a new epoch. At least ``ttl``.
        events: the events kept (a set of names); ``None`` keeps every event. The others
            (typing indicators, say) are broadcast live only, without a position, and are not
            ordered with the kept ones.
        max_channels: the most concrete channels of the listener that may hold history at
            once, across every process (``None``: no bound). A channel holds history from its
            first kept broadcast (or first subscriber) until ``keep`` after its last kept
            broadcast. Under this bound, a kept broadcast on a channel that holds none raises
            `HistoryFull` and reaches no one, while the channels that hold history carry on;
            a subscriber of such a channel gets a position that is not kept (its next
            subscription then answers ``recovered: false``). Storage stays within about
            ``max_channels * size`` messages per listener, whatever names clients make up.

    Raises:
        ConfigurationError: a value is out of range.
    """

    size: int = 100
    ttl: float | None = None
    keep: float = 7 * 24 * 3600.0
    events: Collection[str] | None = None
    max_channels: int | None = None

    def __post_init__(self) -> None:
        if self.events is not None:
            if isinstance(self.events, str) or not all(isinstance(e, str) for e in self.events):
                raise ConfigurationError("History.events must be a collection of event names")
            object.__setattr__(self, "events", frozenset(self.events))
        if not isinstance(self.size, int) or not 1 <= self.size <= MAX_SIZE:
            raise ConfigurationError(f"History.size must be an integer from 1 to {MAX_SIZE}")
        if self.ttl is not None and not self.ttl > 0:
            raise ConfigurationError("History.ttl must be a positive number of seconds, or None")
        if not self.keep > 0 or (self.ttl is not None and self.keep < self.ttl):
            raise ConfigurationError("History.keep must be positive and at least ttl")
        if self.max_channels is not None and (
            not isinstance(self.max_channels, int)
            or isinstance(self.max_channels, bool)
            or self.max_channels < 1
        ):
            raise ConfigurationError("History.max_channels must be an integer of at least 1")

    def keeps(self, event: str) -> bool:
        """Whether broadcasts of ``event`` are kept."""
        return self.events is None or event in self.events

    def retention(self, group: str) -> Retention:
        """The broker's view of this declaration, counted under ``group`` (the pattern)."""
        return Retention(self.size, self.ttl, self.keep, self.max_channels, group)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message of a channel's history, as `SocketServer.history` returns it."""

    position: Position
    event: str
    data: Any


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """What `SocketServer.history` read.

    Attributes:
        messages: the messages, oldest first.
        position: the channel's latest position (offset 0 when nothing was ever broadcast).
        recovered: ``None`` when no ``since`` was given; else whether ``messages`` starts right
            after ``since`` (same epoch, nothing missing in between).
    """

    messages: list[StoredMessage]
    position: Position
    recovered: bool | None = None


def position_data(position: Position) -> dict[str, Any]:
    """The wire form of a position: ``{"offset": int, "epoch": str}``."""
    return {"offset": position.offset, "epoch": position.epoch}


def with_position(frame: str, position: Position) -> str:
    """Add ``"position": {...}`` to an encoded packet (a JSON object ending in ``}``).

    Epochs are made of letters, digits, ``-`` and ``_`` (the brokers check it), so they need
    no escaping.
    """
    return f'{frame[:-1]},"position":{{"offset":{position.offset},"epoch":"{position.epoch}"}}}}'


def parse_since(value: object) -> Position | None:
    """Validate a subscribe request's ``since``: absent (``None``) or ``{"offset", "epoch"}``.

    Raises:
        ProtocolError: ``since`` is present but malformed (``invalid-packet``).
    """
    if value is None:
        return None
    if isinstance(value, dict):
        offset, epoch = value.get("offset"), value.get("epoch")
        if (
            isinstance(offset, int)
            and not isinstance(offset, bool)
            and 0 <= offset < NO_ENTRIES
            and isinstance(epoch, str)
            and 0 < len(epoch) <= _MAX_EPOCH_LENGTH
        ):
            return Position(offset, epoch)
    raise ProtocolError(
        ErrorCode.INVALID_PACKET,
        'since must be {"offset": <integer ≥ 0>, "epoch": <string>}',
    )


def recover(stored: Stored, since: Position | None) -> tuple[Position, list[StoredEntry], bool]:
    """Decide what a subscriber that last saw ``since`` gets from a read of the history.

    Returns ``(position, missed, recovered)``: the position the subscriber continues from
    (``since`` when recovered, else the channel's latest), the messages it missed (oldest
    first; empty unless recovered) and whether it recovered. Without ``since`` nothing is
    missed and ``recovered`` is False.
    """
    latest = Position(stored.top, stored.epoch)
    if since is None or since.epoch != stored.epoch or since.offset > stored.top:
        return latest, [], False
    missed = [entry for entry in stored.entries if entry.offset > since.offset]
    expected = stored.top - since.offset
    if len(missed) != expected or (missed and missed[0].offset != since.offset + 1):
        return latest, [], False
    return since, missed, True
