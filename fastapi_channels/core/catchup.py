"""Catching a new subscriber up: what it gets before live frames, and holding those meanwhile.

Subscribing to a presence or history channel takes a few reads from the broker (the member
list, the missed messages). Live frames for the channel may arrive during those reads: they
are held for that connection only (`CatchUp`), then sent after the subscribe response,
the member list and the missed messages, skipping stored messages the connection already got
(same epoch, offset not above the last one sent). So a client sees, in order and once: the
response, ``channels:presence``, the missed messages, then live ones.

Only specs with presence or history have a `fastapi_channels.core.channel.CatchUp` (the
table of held frames); other channels keep the plain fan-out.

A whole process catches up too (`Reconnects`): while its broker is disconnected from
Redis, the stored messages and presence announcements other processes publish do not reach it.
History channels' subscribers are held from the moment the broker is lost (their broadcasts
reach no one meanwhile), presence channels' when it is connected again; then the process
renews its presence (registering its members again if the broker lost them), each local
presence channel's subscribers get the member list again, and each local history channel is
read from the last position this process delivered before the loss, what is missing going to
its subscribers before the held frames, de-duplicated as above.

Joins and leaves held behind a member list are sent only when they change it (a join the list
already shows, the subscriber's own among them, is dropped), so a client applying them in order
to the list always holds the members.

A member list read while the broker is refilling its presence records (after a Redis restart)
is sent with ``"partial": true``, and the channel's subscribers get it again, whole, once the
broker settled (`Reconnects.settle`): a client never takes a room being refilled for an empty
one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from pydantic_core import from_json

from fastapi_channels.brokers.base import Broker, BrokerState
from fastapi_channels.brokers.stores import HistoryStore, PresenceStore
from fastapi_channels.core.channel import Held, LiveChannel, Subscription
from fastapi_channels.core.outgoing import send
from fastapi_channels.core.presence import Presence, members_frame
from fastapi_channels.core.topics import CHANNEL, split_excluded
from fastapi_channels.wire.errors import BrokerError
from fastapi_channels.wire.history import (
    NO_ENTRIES,
    HistoryPage,
    StoredMessage,
    position_data,
    recover,
    with_position,
)
from fastapi_channels.wire.protocol import JOIN, LEAVE
from fastapi_channels.wire.stored import Position, Retention

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fastapi_channels.core.connection import SocketConnection

__all__ = ["SETTLE_ROUNDS", "CaughtUp", "Reconnects", "catch_up_subscriber", "history_page"]

logger = logging.getLogger("fastapi_channels.catchup")

SETTLE_ROUNDS: Final = 10
"""The most times in a row a partial member list is read again before giving up (logged)."""
_SETTLE_MARGIN: Final = 0.05
"""Seconds added to the broker's estimate of when it settles (its clock ticks in ms)."""
_Holding: TypeAlias = "tuple[list[SocketConnection], Position | None]"
"""Subscribers held for a catch-up, and the last stored position delivered to them."""
_ANNOUNCEMENT: Final = ('{"event":"' + JOIN + '"', '{"event":"' + LEAVE + '"')
"""How held presence announcements start (`fastapi_channels.core.presence.announcements`)."""


@dataclass(slots=True)
class CaughtUp:
    """What a new subscriber gets: response fields now, then frames before live ones.

    Attributes:
        subscription: the new subscription.
        fields: added to the subscribe response (and reply): ``position``, ``recovered``.
        frames: sent after the response, in order (the member list, the missed messages).
        last: the last stored position sent (or the position the subscriber continues from):
            held stored messages up to it are skipped.
        members: the member keys of the list among ``frames`` (None without one): held joins
            and leaves are applied to it, and those that change nothing (a join the list
            already shows, the subscriber's own among them) are dropped.
    """

    subscription: Subscription
    fields: dict[str, Any] = field(default_factory=dict)
    frames: list[Held] = field(default_factory=list)
    last: Position | None = None
    members: set[str] | None = None

    def finish(self, connection: SocketConnection) -> None:
        """Send the frames, then the held live ones not already sent, and stop holding."""
        sub = self.subscription
        catch_up = sub.spec.catch_up
        held = catch_up.release(sub.channel, connection) if catch_up is not None else None
        if held is None or connection.subscriptions.get(sub.channel) is not sub:
            return  # unsubscribed meanwhile
        last = self.last
        for item in self.frames:
            send((connection,), sub, item.frame, item.filtered)
        members = None if self.members is None else set(self.members)
        for item in held:
            if members is not None and not item.filtered and not _changes(members, item.frame):
                continue  # a join or leave the member list already accounts for
            position = item.position
            if position is not None:
                if _already_sent(position, last):
                    continue  # among the missed messages
                last = position
            send((connection,), sub, item.frame, item.filtered)


def _changes(members: set[str], frame: str) -> bool:
    """Apply a held presence announcement to ``members``; whether it changed them.

    Frames other than joins and leaves count as changes (they are always sent).
    """
    if not frame.startswith(_ANNOUNCEMENT):
        return True
    packet = from_json(frame)
    data = packet.get("data")
    found = data.get("member") if "channel" not in packet and isinstance(data, dict) else None
    if not isinstance(found, dict) or "id" not in found:
        return True  # a channel event that only shares the name: not an announcement
    event, member = packet["event"], found["id"]
    if event == JOIN:
        if member in members:
            return False
        members.add(member)
    elif event == LEAVE:
        if member not in members:
            return False
        members.discard(member)
    return True


def _let_go(holding: Mapping[str, _Holding]) -> None:
    """Stop holding subscribers without catching them up (the held frames are sent)."""
    for channel, (waiting, _) in holding.items():
        for connection in waiting:
            sub = connection.subscriptions.get(channel)
            if sub is not None:
                CaughtUp(sub).finish(connection)


def _already_sent(position: Position, last: Position | None) -> bool:
    return last is not None and position.epoch == last.epoch and position.offset <= last.offset


async def catch_up_subscriber(
    connection: SocketConnection,
    sub: Subscription,
    since: Position | None,
    presence: Presence,
    broker: Broker,
    reconnects: Reconnects,
) -> CaughtUp | None:
    """Prepare what a new subscriber of a presence or history channel gets first.

    Registers the connection's user as a member (presence), reads the member list and, for a
    history channel, the messages after ``since``. Returns None when nothing is held for this
    subscription (another kind of channel, or it was subscribed already). The caller sends the
    subscribe response with `CaughtUp.fields`, then calls `CaughtUp.finish`, which also stops
    holding live frames. Broker failures are logged, not raised: the member list is then left
    out, and a history channel answers without a position (``recovered: false`` when
    ``since`` was given).
    """
    spec = sub.spec
    held = spec.catch_up
    if held is None or not held.holding(sub.channel, connection):
        return None
    caught = CaughtUp(sub)
    if spec.presence:
        await presence.add(connection, sub)
        try:
            found = await presence.snapshot(sub.channel)
        except BrokerError as exc:
            logger.warning("no member list for %r: %s", sub.channel, exc)
        else:
            frame = members_frame(sub.channel, found.members, partial=found.partial)
            caught.frames.append(Held(frame, filtered=False))
            caught.members = set(found.members)
            if found.partial:
                reconnects.settle(sub.channel, found.settles_in)
    if spec.retention is not None:
        await _recover(caught, spec.retention, connection.id, since, broker, reconnects)
    return caught


async def _recover(
    caught: CaughtUp,
    retention: Retention,
    connection_id: str,
    since: Position | None,
    broker: Broker,
    reconnects: Reconnects,
) -> None:
    channel = caught.subscription.channel
    after = NO_ENTRIES if since is None else since.offset
    try:
        if not isinstance(broker, HistoryStore):
            raise BrokerError(f"the {broker.name} broker keeps no history")
        stored = await broker.read_stored(CHANNEL + channel, retention, after)
    except BrokerError as exc:
        logger.warning("no history for %r: %s", channel, exc)
        if since is not None:
            caught.fields["recovered"] = False
        return
    position, missed, recovered = recover(stored, since)
    reconnects.note(channel, Position(stored.top, stored.epoch))
    caught.fields["position"] = position_data(position)
    if since is not None:
        caught.fields["recovered"] = recovered
    caught.last = position
    for entry in missed:
        at = Position(entry.offset, stored.epoch)
        excluded, data = split_excluded(entry.data)
        if excluded != connection_id:  # a broadcast excluding this very connection: skipped
            caught.frames.append(Held(with_position(data.decode(), at), at))
        caught.last = at


async def history_page(
    store: HistoryStore,
    topic: str,
    retention: Retention,
    limit: int | None,
    since: Position | None,
) -> HistoryPage:
    """Read a page of a history channel's retained messages (see `SocketServer.history`).

    Raises:
        BrokerError: the store could not be read.
    """
    stored = await store.read_stored(topic, retention, 0 if since is None else since.offset)
    recovered: bool | None = None
    entries = stored.entries
    if since is not None:
        recovered = recover(stored, since)[2]
        if not recovered and since.epoch != stored.epoch:
            entries = (await store.read_stored(topic, retention)).entries
        entries = entries[:limit] if limit is not None else entries
    elif limit is not None:
        entries = entries[-limit:] if limit > 0 else []
    messages = []
    for entry in entries:
        packet = from_json(split_excluded(entry.data)[1])
        position = Position(entry.offset, stored.epoch)
        messages.append(StoredMessage(position, packet["event"], packet.get("data")))
    return HistoryPage(messages, Position(stored.top, stored.epoch), recovered)


class Reconnects:
    """Fills the gap a broker outage leaves in this process's history and presence channels.

    Args:
        broker: the process's broker.
        channels: the server's live channels by name (read, never changed).
        topic: the broker topic of a channel name.
        presence: the process's presence, renewed before member lists are read again.
    """

    def __init__(
        self,
        broker: Broker,
        channels: Mapping[str, LiveChannel],
        topic: str,
        presence: Presence,
    ) -> None:
        self._broker = broker
        self._channels = channels
        self._topic = topic
        self._presence = presence
        self._last: dict[str, Position] = {}
        self._settling: dict[str, asyncio.Task[None]] = {}
        self._rounds: dict[str, int] = {}
        self._runner: asyncio.Task[None] | None = None
        self.filled = asyncio.Event()
        """Set after each catch-up that follows a reconnect (for tests and monitoring)."""

    def saw(self, channel: str, position: Position) -> None:
        """Record a stored message this process delivered (the fan-out path: one dict write)."""
        self._last[channel] = position

    def note(self, channel: str, position: Position) -> None:
        """Record a channel's position read when subscribing, unless a newer one is known."""
        self._last.setdefault(channel, position)

    def forget(self, channel: str) -> None:
        """The process has no subscriber left in ``channel``."""
        self._last.pop(channel, None)

    def start(self) -> None:
        """Watch the broker: after every reconnection, catch the history channels up."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._watch(), name="fastapi_channels.reconnects")

    async def stop(self) -> None:
        """Stop watching, and sending member lists again."""
        runner, self._runner = self._runner, None
        tasks = [*self._settling.values(), *([runner] if runner is not None else [])]
        self._settling.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def settle(self, channel: str, delay: float) -> None:
        """Send ``channel``'s subscribers its member list again once the broker settled.

        Called after a partial list was sent: in ``delay`` seconds (the broker's estimate; a
        renewal interval when it has none) the list is read again, with the subscribers' live
        frames held meanwhile, and sent to every local subscriber, partial again only if the
        broker still is (then this repeats, at most `SETTLE_ROUNDS` times in a row). One
        pending read per channel; nothing happens for a channel without local subscribers
        by then.
        """
        if channel in self._settling:
            return
        rounds = self._rounds.get(channel, 0) + 1
        if rounds > SETTLE_ROUNDS:
            self._rounds.pop(channel, None)
            logger.warning("%r: the member list is still partial; not sent again", channel)
            return
        self._rounds[channel] = rounds
        wait = delay + _SETTLE_MARGIN if delay > 0 else self._presence.timeout / 3
        self._settling[channel] = asyncio.create_task(
            self._settle(channel, wait), name=f"fastapi_channels.presence.settle {channel}"
        )

    async def _settle(self, channel: str, wait: float) -> None:
        try:
            await asyncio.sleep(wait)
        finally:
            self._settling.pop(channel, None)
        try:
            await self._catch_up(channel, *self._hold(channel), history=False)
        except Exception:
            logger.exception("sending the member list of %r again failed", channel)

    async def _watch(self) -> None:
        broker = self._broker
        while True:
            await broker.wait_for_state(BrokerState.RECONNECTING)
            # A history channel's broadcasts reach no one while the broker is lost, so its
            # subscribers are held from now on: the first stored messages the re-subscribed
            # broker delivers then wait behind what was missed before them.
            lost = {c: self._hold(c) for c, live in self._channels.items() if live.spec.retention}
            try:
                state = await broker.wait_for_state(BrokerState.CONNECTED, BrokerState.STOPPED)
            finally:
                if broker.state is not BrokerState.CONNECTED:
                    _let_go(lost)  # stopped or cancelled: nothing to read
            if state is BrokerState.STOPPED:
                return
            try:
                await self.fill(lost)
            except Exception:
                logger.exception("catching up after a reconnect failed")
            self.filled.set()
            self.filled = asyncio.Event()

    async def fill(self, held: Mapping[str, _Holding] | None = None) -> None:
        """Catch every local presence and history channel up, all at once.

        Every such channel's subscribers are held first (``held``: those held already, with
        the last stored position delivered to them), then presence is renewed (so this
        process's members are registered again when the broker lost them, and the joins that
        announces are held too), then a presence channel's subscribers get the member list
        again, and a history channel's what this process missed there, before the held frames.
        The broker bounds how many reads run at once.
        """
        holding = dict(held or {})
        for channel in list(self._channels):
            waiting, last = self._hold(channel)
            if channel in holding:
                waiting = [*holding[channel][0], *waiting]
                last = holding[channel][1]
            holding[channel] = waiting, last
        try:
            if any(live.spec.presence for live in self._channels.values()):
                await self._presence.renew()
        finally:
            await self._release(holding)
        for channel in [c for c in self._last if c not in self._channels]:
            self.forget(channel)

    async def _release(self, holding: Mapping[str, _Holding]) -> None:
        """Catch the held subscribers up, channel by channel, and stop holding them."""
        await asyncio.gather(*(self._catch_up(c, *held) for c, held in holding.items() if held[0]))

    def _hold(self, channel: str) -> _Holding:
        """Hold the live frames of ``channel``'s subscribers not held already.

        Returns those subscribers, and the last stored position delivered to them: what comes
        after it is either read from the history or held.
        """
        live = self._channels.get(channel)
        catch_up = live.spec.catch_up if live is not None else None
        if live is None or catch_up is None:
            return [], None
        waiting = [c for c in live.subscribers if not catch_up.holding(channel, c)]
        for connection in waiting:
            catch_up.hold(channel, connection)
        return waiting, self._last.get(channel)

    async def _catch_up(
        self,
        channel: str,
        waiting: list[SocketConnection],
        last: Position | None,
        *,
        history: bool = True,
    ) -> None:
        """Read what the ``waiting`` subscribers need, send it, then their held frames.

        ``last`` is the last stored position delivered before holding them. With ``history``
        False, only a presence channel's member list is read and sent.
        """
        live = self._channels.get(channel)
        frames: list[Held] = []
        members: set[str] | None = None
        sent = last  # the last stored position the frames reach: held ones up to it are skipped
        try:
            spec = live.spec if live is not None else None
            if spec is not None and spec.presence:
                found = await self._members(channel)
                if found is not None:
                    frames.append(found[0])
                    members = found[1]
            if spec is not None and history and spec.retention is not None and last is not None:
                missed = await self._missed(channel, spec.retention, last)
                frames += missed
                sent = missed[-1].position if missed else last
        finally:
            for connection in waiting:
                sub = connection.subscriptions.get(channel)
                if sub is not None:  # else it unsubscribed meanwhile, which stopped the holding
                    CaughtUp(sub, frames=list(frames), last=sent, members=members).finish(
                        connection
                    )

    async def _members(self, channel: str) -> tuple[Held, set[str]] | None:
        if not isinstance(self._broker, PresenceStore):
            return None
        try:
            found = await self._presence.snapshot(channel)
        except BrokerError as exc:
            logger.warning("could not read the members of %r after a reconnect: %s", channel, exc)
            return None
        if found.partial:
            self.settle(channel, found.settles_in)
        else:
            self._rounds.pop(channel, None)
        frame = members_frame(channel, found.members, partial=found.partial)
        return Held(frame, filtered=False), set(found.members)

    async def _missed(self, channel: str, retention: Retention, last: Position) -> list[Held]:
        if not isinstance(self._broker, HistoryStore):
            return []
        try:
            stored = await self._broker.read_stored(self._topic + channel, retention, last.offset)
        except BrokerError as exc:
            logger.warning("could not read the history of %r after a reconnect: %s", channel, exc)
            return []
        _, missed, recovered = recover(stored, last)
        if not recovered:
            logger.warning("%r: messages missed during the outage are no longer kept", channel)
        frames, end = [], last
        for entry in missed:
            end = Position(entry.offset, stored.epoch)
            data = split_excluded(entry.data)[1]  # caught up whole: the sender gets it too
            frames.append(Held(with_position(data.decode(), end), end))
        if self._last.get(channel) == last:  # no live message arrived during the read
            self._last[channel] = end
        return frames
