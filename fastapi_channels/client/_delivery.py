"""Who hears a packet: the open packet streams, the client's callbacks, its channels' callbacks.

Delivery never blocks the reader and never raises: streams are bounded and drop their oldest
packet when full, a failing callback is logged, and a packet nobody listens to is logged (or
ignored, for a channel the client has just left). The events a channel receives together with
its subscription's answer are held back until the code awaiting ``subscribe()`` has added its
callbacks and streams, then delivered in order. When the client stops for good every stream
ends.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi_channels.client._subscriptions import Subscriptions
from fastapi_channels.client.channel import Channel
from fastapi_channels.client.listeners import Listeners
from fastapi_channels.client.packets import Packet, PacketStream

__all__ = ["Delivery"]

logger = logging.getLogger("fastapi_channels.client")


class Delivery:
    """Routes packets to streams and callbacks, and holds the open streams.

    Args:
        callbacks: the client's own callbacks (for plain events and the client's events).
        subscriptions: the channels, whose callbacks get channel events.
    """

    def __init__(self, callbacks: Listeners, subscriptions: Subscriptions) -> None:
        self._callbacks = callbacks
        self._subscriptions = subscriptions
        self._streams: set[PacketStream] = set()

    def stream(
        self, event: str | None, channel: str | None, maxsize: int, *, ended: bool
    ) -> PacketStream:
        """A new stream of matching packets; already closed when ``ended`` (client stopped)."""
        stream = PacketStream(event, channel, maxsize, on_close=self._streams.discard)
        if ended:
            stream.close()
        else:
            self._streams.add(stream)
        return stream

    def unheard(self, event: str) -> bool:
        """Whether neither a stream nor a callback of the client would get ``event``."""
        return not self._streams and not self._callbacks._has_callbacks(event)

    def deliver(self, packet: Packet) -> None:
        """Hand a packet from the server to the streams, then to the callbacks.

        A channel event advances its channel's position, if it has one.
        """
        if packet.channel is not None:
            channel = self._subscriptions.get(packet.channel)
            if channel is not None and channel._held is not None:
                channel._held.append(packet)
                return
        for stream in list(self._streams):
            if stream.matches(packet):
                stream.put(packet)
        if packet.channel is None:
            self._callbacks._dispatch(packet)
            return
        channel = self._subscriptions.get(packet.channel)
        if channel is not None:
            if packet.position is not None:
                channel.position = packet.position
            if not channel._dispatch(packet) and not self._streams:
                logger.warning("no callback for %r on %s", packet.event, packet.channel)
        elif not self._subscriptions.is_leaving(packet.channel):
            logger.warning("ignoring %r for %s, not subscribed", packet.event, packet.channel)

    def announce(self, event: str, data: dict[str, Any]) -> None:
        """Deliver one of the client's own events (``channels:state``...).

        Only streams that ask for ``event`` by name get it, and the client's callbacks.
        """
        packet = Packet(event=event, data=data)
        for stream in list(self._streams):
            if stream.matches(packet) and stream.event is not None:
                stream.put(packet)
        self._callbacks._dispatch(packet)

    def release(self, channel: Channel) -> None:
        """Deliver the packets held for ``channel`` since its answer, unless it was dropped."""
        held, channel._held = channel._held, None
        if held and self._subscriptions.get(channel.name) is channel:
            for packet in held:
                self.deliver(packet)

    def release_later(self, channel: Channel) -> None:
        """Release ``channel``'s held packets once the code awaiting its answer has run.

        ``subscribe()`` releases them itself just before returning to that code. This later
        release is for an answer nobody awaits any more (a timed-out ``subscribe()``): the
        waiter's result reaches the awaiting task through a shield one loop turn later, so
        that task has run by the time this runs.
        """
        loop = asyncio.get_running_loop()
        loop.call_soon(loop.call_soon, self.release, channel)

    def end(self) -> None:
        """End every stream (the client stopped for good); buffered packets stay readable."""
        for stream in list(self._streams):
            stream.close()
        self._streams.clear()
