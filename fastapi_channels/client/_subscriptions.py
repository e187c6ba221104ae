"""The client's channels by name, and what it knows of each: answers, positions, members.

A channel is added when it is first subscribed to and stays until it is unsubscribed or the
server refuses it. A subscribe request that cannot be sent (the connection is down) is sent
again once the client is ready. After a lost connection every channel goes back to
``pending`` and is subscribed again, from its last position on a history channel, so the
server replays what was missed. An answer or presence event for a channel the client does not
have (one it has just left) is ignored; a refusal of a channel nobody awaits any more (one
subscribed again after a reconnect) drops it and is logged. A channel the server subscribed
the client to (``channels:subscribed``) joins the table as if the client had asked for it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi_channels.client.channel import Channel
from fastapi_channels.client.errors import ConnectionClosed
from fastapi_channels.client.packets import Packet, parse_position
from fastapi_channels.wire.history import position_data
from fastapi_channels.wire.protocol import (
    JOIN,
    PRESENCE,
    SUBSCRIBE_REQUEST,
    UNSUBSCRIBE_REQUEST,
    UNSUBSCRIBED,
)

__all__ = ["Subscriptions"]

if TYPE_CHECKING:
    from fastapi_channels.client.connection import ChannelsClient

logger = logging.getLogger("fastapi_channels.client")


class Subscriptions:
    """The channels subscribed or being subscribed, and the channels being left.

    Args:
        send: writes a packet to the current connection; raises `ConnectionClosed` when there
            is none.
    """

    def __init__(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self._send = send
        self._channels: dict[str, Channel] = {}
        self._leaving: set[str] = set()

    def get(self, name: str) -> Channel | None:
        """The channel ``name``, when subscribed or being subscribed."""
        return self._channels.get(name)

    def all(self) -> dict[str, Channel]:
        """A copy of the channels by name."""
        return dict(self._channels)

    def add(self, channel: Channel) -> None:
        """Keep ``channel`` (pending until the server answers)."""
        self._channels[channel.name] = channel
        self._leaving.discard(channel.name)

    def is_leaving(self, name: str) -> bool:
        """Whether ``name`` was unsubscribed on this connection (its late events are expected)."""
        return name in self._leaving

    async def request(self, channel: Channel) -> None:
        """Ask the server for ``channel``, from its position when it has one.

        Does not raise when the connection is down: the request is then sent again once the
        client is ready.
        """
        channel._requested = True
        data: dict[str, Any] = {"channel": channel.name}
        if channel.position is not None:
            data["since"] = position_data(channel.position)
        try:
            await self._send({"event": SUBSCRIBE_REQUEST, "data": data})
        except ConnectionClosed:
            channel._requested = False  # sent again after the reconnect

    async def remove(self, name: str, *, connected: bool) -> None:
        """Drop ``name`` and its callbacks; tell the server when ``connected``.

        A subscription still pending fails with `SubscriptionDenied` (``unsubscribed``).
        """
        channel = self._channels.pop(name, None)
        if channel is None:
            return
        channel._callbacks.clear()
        channel._settle(False, "unsubscribed")
        channel.state = "unsubscribed"
        if connected:
            self._leaving.add(name)
            await self._send(
                {"event": UNSUBSCRIBE_REQUEST, "channel": name, "data": {"channel": name}}
            )

    def answer(self, packet: Packet) -> tuple[Channel, dict[str, Any]] | None:
        """Apply a ``subscribe-channel-response``.

        Returns the channel and the data of the ``channels:subscription`` event that reports
        the answer, or ``None`` when the answer is for a channel the client does not have.
        A refused channel is dropped.
        """
        data = packet.data if isinstance(packet.data, dict) else {}
        name = data.get("channel")
        channel = self._channels.get(name) if isinstance(name, str) else None
        if channel is None:
            if not (isinstance(name, str) and name in self._leaving):
                logger.warning("ignoring a subscription answer for unknown channel %r", name)
            return None
        channel._requested = False
        successful = bool(data.get("successful"))
        reason = str(data.get("reason") or "")
        history: dict[str, Any] = {}
        if successful and "position" in data:
            channel.position = parse_position(data["position"])
            history["position"] = data["position"]
        if "recovered" in data:
            channel.recovered = data["recovered"] is True
            history["recovered"] = channel.recovered
            if not channel.recovered:
                logger.info("%s: missed events could not be replayed", channel.name)
        awaited = channel._settle(successful, reason or "refused")
        if not successful:
            del self._channels[channel.name]
            if not awaited:
                logger.warning("subscribing again to %s was refused: %s", channel.name, reason)
        return channel, {
            "channel": channel.name,
            "successful": successful,
            "reason": reason or None,
            "resubscribed": not awaited,
            **history,
        }

    def by_server(self, packet: Packet, client: ChannelsClient) -> Channel | None:
        """Apply a subscription the server made or ended (``channels:subscribed``/``unsubscribed``).

        A subscribed channel is added to the table as granted (so it is subscribed again after
        a reconnect, like any other) and returned, holding its events until the client's
        callbacks for the packet have run; an unsubscribed one is dropped with its callbacks.
        A subscription to a channel the client has already is only updated (its position).
        """
        data = packet.data if isinstance(packet.data, dict) else {}
        name = data.get("channel")
        if not isinstance(name, str) or not name:
            return None
        if packet.event == UNSUBSCRIBED:
            channel = self._channels.pop(name, None)
            if channel is not None:
                channel._callbacks.clear()
                channel._settle(False, "unsubscribed by the server")
                channel.state = "unsubscribed"
                self._leaving.add(name)
            return None
        channel = self._channels.get(name)
        if channel is None:
            channel = Channel(client, name)
            self.add(channel)
        if "position" in data:
            channel.position = parse_position(data["position"])
        channel._requested = False
        channel._settle(True, "")
        channel._held = []
        return channel

    def presence(self, packet: Packet) -> None:
        """Follow a presence event in its channel's `members`, then run the channel's callbacks.

        ``channels:presence`` replaces the member list, unless it is marked ``partial`` (the
        server's broker is refilling its records after a restart): a partial list is merged
        into the members held, so a room being refilled never looks emptier than it is, until
        a complete list replaces them. ``channels:join`` and ``channels:leave`` add and remove
        one member. Members without an ``id`` are skipped.
        """
        data = packet.data if isinstance(packet.data, dict) else {}
        name = data.get("channel")
        channel = self._channels.get(name) if isinstance(name, str) else None
        if channel is None:
            return
        if packet.event == PRESENCE:
            listed = data.get("members")
            if isinstance(listed, list):
                members = {m.get("id"): m for m in listed if isinstance(m, dict) and "id" in m}
                if data.get("partial") is True:
                    channel.members.update(members)
                else:
                    channel.members = members
        else:
            member = data.get("member")
            if isinstance(member, dict) and "id" in member:
                if packet.event == JOIN:
                    channel.members[member["id"]] = member
                else:
                    channel.members.pop(member["id"], None)
        channel._dispatch(packet)

    def connection_lost(self) -> None:
        """Put every channel back to ``pending``, to be requested again."""
        for channel in self._channels.values():
            channel._requested = False
            if channel.state == "subscribed":
                channel.state = "pending"

    def connection_opened(self) -> None:
        """Start afresh on a new connection: nothing is being left, every channel is pending."""
        self._leaving.clear()
        self.connection_lost()

    async def resubscribe(self) -> None:
        """Ask the server again for every channel (on a new connection, once ready)."""
        for channel in list(self._channels.values()):
            await self.request(channel)

    def fail_waiting(self, reason: str) -> None:
        """Fail every subscription still awaited with `ConnectionClosed` (the client stopped)."""
        for channel in self._channels.values():
            waiter, channel._waiter = channel._waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_exception(ConnectionClosed(reason))
