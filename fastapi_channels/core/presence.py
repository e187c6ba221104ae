"""Presence channels: who is in a channel, as users, across every process.

A channel listener with ``presence = True`` makes its channels presence channels. A member is a
user (its user key), not a connection: a user's several connections, on one process or many,
make one member, which joins with the first and leaves after the last. Anonymous connections
may subscribe and see the members, but are not members. What subscribers learn of a member is
the listener's ``member_info(connection, user)`` for the connection that made it join.

Each process tells the broker which of its users are in which channel (batched per channel:
changes that arrive while a write is in flight go together in the next one) and renews its own
liveness every ``timeout / 3`` seconds. A process that stops renewing (it died, or lost Redis)
is considered dead ``timeout`` seconds after its last renewal: reads of the members then leave
its members out, and the next sweep removes them and announces their leaves. Every process
sweeps the presence channels it has subscribers in at each renewal, so a dead process's
members leave within ``timeout * 4 / 3`` seconds of its last renewal.

When the broker cannot be reached, changes are kept locally and written again (a full resync
of the channel) at the first renewal that succeeds; a process that finds it was considered
dead meanwhile resyncs every channel.

The broker announces joins and leaves on the topic ``p:<channel>`` atomically with the change,
as plain events (``channels:join``, ``channels:leave``), so every process hears one order.

When the broker lost its records (Redis restarted without persistence), every process finds
at its next renewal that it was forgotten and registers its members again; until all had the
time to (one ``timeout``), member lists are read as partial (`snapshot`), and the server sends
them with ``"partial": true`` and again, whole, once the store settled (see
`fastapi_channels.core.catchup.Reconnects.settle`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from pydantic_core import from_json, to_json

from fastapi_channels.brokers.base import Broker
from fastapi_channels.brokers.stores import Announcements, PresenceSnapshot, PresenceStore
from fastapi_channels.core.channel import current_subscription
from fastapi_channels.wire.errors import BrokerError
from fastapi_channels.wire.protocol import JOIN, LEAVE, PRESENCE

if TYPE_CHECKING:
    from fastapi_channels.core.channel import Subscription
    from fastapi_channels.core.connection import SocketConnection

__all__ = ["PRESENCE_TOPIC", "Presence", "announcements"]

logger = logging.getLogger("fastapi_channels.presence")

PRESENCE_TOPIC: Final = "p:"
"""Topics of presence announcements: ``p:<channel>``; the broker keeps the members under it."""


def announcements(channel: str) -> Announcements:
    """The ``channels:join`` and ``channels:leave`` packets of ``channel``, around the info."""
    head = b'{"channel":' + to_json(channel) + b',"member":'
    return Announcements(
        join=(b'{"event":"' + JOIN.encode() + b'","data":' + head, b"}}"),
        leave=(b'{"event":"' + LEAVE.encode() + b'","data":' + head, b"}}"),
    )


def members_frame(channel: str, members: dict[str, bytes], *, partial: bool = False) -> str:
    """The ``channels:presence`` packet: the members' info, ordered by member key.

    A ``partial`` list (one that may lack members) carries ``"partial": true``.
    """
    listed = b",".join(members[key] for key in sorted(members))
    head = b'{"event":"' + PRESENCE.encode() + b'","data":{"channel":' + to_json(channel)
    tail = b',"partial":true}}' if partial else b"}}"
    return (head + b',"members":[' + listed + b"]" + tail).decode()


@dataclass(slots=True)
class _Member:
    info: bytes
    connections: set[SocketConnection] = field(default_factory=set)


@dataclass(slots=True, eq=False)
class _Channel:
    """This process's view of one presence channel."""

    announce: Announcements
    local: dict[str, _Member] = field(default_factory=dict)
    """The users with connections here, and their info."""
    registered: dict[str, bytes] = field(default_factory=dict)
    """What the broker holds for this process (as far as this process knows)."""
    dirty: bool = False
    """The broker's view may be wrong: write it whole at the next write."""
    writes: int = 0
    """Writes ended so far (a sweep that raced one is not trusted)."""
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    writer: asyncio.Task[None] | None = None


class Presence:
    """This process's presence: its members per channel, their writes, renewal and sweeps.

    Args:
        broker: the process's broker; presence needs one that is a `PresenceStore`
            (with another, every presence operation raises `BrokerError`).
        timeout: seconds after its last renewal before a process counts as dead.
    """

    def __init__(self, broker: Broker, timeout: float) -> None:
        self._broker = broker
        self.timeout = timeout
        self._channels: dict[str, _Channel] = {}
        self._watched: set[str] = set()
        self._runner: asyncio.Task[None] | None = None
        self._failing = False
        self._renewed = False
        """Whether this process's last renewal succeeded (the store knew it)."""
        self._renewing = asyncio.Lock()
        """One renewal at a time: the timer's and a reconnection's never interleave."""

    @property
    def store(self) -> PresenceStore:
        """The broker, as the store that keeps presence.

        Raises:
            BrokerError: the broker keeps no presence.
        """
        broker = self._broker
        if not isinstance(broker, PresenceStore):
            raise BrokerError(f"the {broker.name} broker keeps no presence")
        return broker

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start renewing and sweeping, every ``timeout / 3`` seconds."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="fastapi_channels.presence")

    async def stop(self) -> None:
        """Stop renewing and declare this process dead, so what it still holds is swept."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        runner.cancel()
        await asyncio.wait({runner})
        writers = [c.writer for c in self._channels.values() if c.writer is not None]
        if writers:
            await asyncio.wait(writers, timeout=self.timeout)
        try:
            await self.store.presence_retire()
        except BrokerError as exc:
            logger.warning("could not retire this process's presence: %s", exc)

    @property
    def running(self) -> bool:
        """Whether renewals run."""
        return self._runner is not None

    # ------------------------------------------------------------------ members

    def watch(self, channel: str) -> None:
        """Note that this process has subscribers in ``channel``: it sweeps it from now on."""
        self._watched.add(channel)

    def unwatch(self, channel: str) -> None:
        """Note that this process has no subscriber left in ``channel``."""
        self._watched.discard(channel)

    async def add(self, connection: SocketConnection, subscription: Subscription) -> None:
        """Count ``connection`` as its user's in ``subscription``'s channel; wait for the write.

        A user's first connection here registers the user with the broker, which announces the
        join if no other process holds the user. Never raises: broker failures are logged and
        retried at the next renewal; ``member_info`` failing falls back to ``{"id": key}``.
        """
        key = connection.user_key
        channel = subscription.channel
        if key is None:
            return
        state = self._channels.get(channel)
        member = state.local.get(key) if state is not None else None
        info = member.info if member is not None else await _info(connection, subscription)
        if connection.subscriptions.get(channel) is not subscription:
            return  # unsubscribed while the info was computed
        state = self._state(channel)
        member = state.local.get(key)
        if member is None:
            member = state.local[key] = _Member(info)
        member.connections.add(connection)
        await self._write(channel, state)

    async def remove(self, connection: SocketConnection, channel: str) -> None:
        """Stop counting ``connection``; its user's last connection here unregisters it.

        Never raises (see `add`).
        """
        key = connection.user_key
        state = self._channels.get(channel)
        if key is None or state is None:
            return
        member = state.local.get(key)
        if member is None or connection not in member.connections:
            return
        member.connections.discard(connection)
        if not member.connections:
            del state.local[key]
        await self._write(channel, state)

    async def members(self, channel: str) -> dict[str, bytes]:
        """The channel's members on every live process: user key to info (JSON bytes).

        Raises:
            BrokerError: the broker could not be read.
        """
        return await self.store.presence_members(PRESENCE_TOPIC + channel, announcements(channel))

    async def snapshot(self, channel: str) -> PresenceSnapshot:
        """The channel's members as `members` reads them, and whether the list is complete.

        When this process is not alive in the store (it restarted and this process has not
        renewed since), it renews first (registering its members again) and reads once more.

        Raises:
            BrokerError: the broker could not be read.
        """
        topic, announce = PRESENCE_TOPIC + channel, announcements(channel)
        found = await self.store.presence_snapshot(topic, announce)
        if not found.registered:
            await self.renew()
            found = await self.store.presence_snapshot(topic, announce)
        return found

    async def count(self, channel: str) -> int:
        """How many members the channel has on every live process.

        Raises:
            BrokerError: the broker could not be read.
        """
        return await self.store.presence_count(PRESENCE_TOPIC + channel, announcements(channel))

    def local_members(self, channel: str) -> dict[str, Any]:
        """This process's members of ``channel`` and their info (no I/O)."""
        state = self._channels.get(channel)
        if state is None:
            return {}
        return {key: from_json(member.info) for key, member in state.local.items()}

    # ------------------------------------------------------------------ writes

    def _state(self, channel: str) -> _Channel:
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel(announcements(channel))
        return state

    async def _write(self, channel: str, state: _Channel) -> None:
        """Wait until a write that includes the current local state has ended."""
        done = asyncio.get_running_loop().create_future()
        state.waiters.append(done)
        if state.writer is None:
            state.writer = asyncio.create_task(
                self._writes(channel, state), name=f"fastapi_channels.presence {channel}"
            )
        await asyncio.shield(done)

    async def _writes(self, channel: str, state: _Channel) -> None:
        """Write the channel's changes, one batch at a time, until no one waits."""
        try:
            while state.waiters:
                waiters, state.waiters = state.waiters, []
                try:
                    await self._write_once(channel, state)
                except BrokerError as exc:
                    state.dirty = True
                    logger.warning("presence of %r not written (retried later): %s", channel, exc)
                except Exception:
                    state.dirty = True
                    logger.exception("presence of %r not written (retried later)", channel)
                finally:
                    state.writes += 1
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(None)
        finally:
            state.writer = None
            idle = not (state.local or state.registered or state.dirty or state.waiters)
            if idle and self._channels.get(channel) is state:
                del self._channels[channel]

    async def _write_once(self, channel: str, state: _Channel) -> None:
        topic = PRESENCE_TOPIC + channel
        wanted = {key: member.info for key, member in state.local.items()}
        if state.dirty:
            state.dirty = False
            try:
                await self.store.presence_sync(topic, wanted, state.announce)
            except BaseException:
                state.dirty = True
                raise
            state.registered = wanted
            return
        join = {key: info for key, info in wanted.items() if key not in state.registered}
        leave = [key for key in state.registered if key not in wanted]
        if not (join or leave):
            return
        try:
            await self.store.presence_update(topic, join, leave, state.announce)
        except BaseException:
            state.dirty = True
            raise
        state.registered.update(join)
        for key in leave:
            state.registered.pop(key, None)

    # ------------------------------------------------------------------ renewal

    async def _run(self) -> None:
        interval = self.timeout / 3
        while True:
            await self.renew()
            await asyncio.sleep(interval)

    async def renew(self) -> None:
        """One round: renew this process, resync what needs it, sweep the watched channels.

        Never raises; a failing round is logged (once until one succeeds) and retried at the
        next one. Rounds run one at a time: a caller waits for the one in progress first.
        """
        async with self._renewing:
            await self._renew()

    async def _renew(self) -> None:
        try:
            alive = await self.store.presence_renew(self.timeout, was_alive=self._renewed)
            self._renewed = True
            if not alive:
                for known in self._channels.values():
                    known.dirty = True
            watched = sorted(self._watched | set(self._channels))
            topics = {PRESENCE_TOPIC + c: self._held(c) for c in watched}
            announce = {PRESENCE_TOPIC + c: announcements(c) for c in watched}
            writes = {c: self._channels[c].writes for c in watched if c in self._channels}
            differ = await self.store.presence_sweep(topics, announce)
            for topic in differ:
                channel = topic[len(PRESENCE_TOPIC) :]
                state = self._channels.get(channel)
                if state is None or (state.writes == writes.get(channel) and not state.waiters):
                    self._state(channel).dirty = True  # else a write raced the sweep
            await self._resync(c for c, s in list(self._channels.items()) if s.dirty)
        except BrokerError as exc:
            if not self._failing:
                logger.warning("presence renewal failed (retrying): %s", exc)
            self._failing = True
        except Exception:
            logger.exception("presence renewal failed (retrying)")
        else:
            if self._failing:
                logger.warning("presence renewal works again")
            self._failing = False

    def _held(self, channel: str) -> int:
        state = self._channels.get(channel)
        if state is None:
            return 0
        if state.dirty:
            return -1  # unknown: the store's count will differ, and the channel is resynced
        return len(state.registered)

    async def _resync(self, channels: Iterable[str]) -> None:
        for channel in channels:
            state = self._channels.get(channel)
            if state is not None:
                await self._write(channel, state)


async def _info(connection: SocketConnection, subscription: Subscription) -> bytes:
    """The member info of ``connection``'s user, as JSON bytes with an ``id``."""
    key = connection.user_key
    token = current_subscription.set(subscription)
    try:
        member_info = subscription.spec.member_info
        if member_info is None:
            return to_json({"id": key})
        result = member_info(connection, connection.user)
        if inspect.isawaitable(result):
            result = await result
        info = dict(result)
        info.setdefault("id", key)
        return to_json(info)
    except Exception:
        logger.exception("member_info failed for %r in %r", key, subscription.channel)
        return to_json({"id": key})
    finally:
        current_subscription.reset(token)
