"""A channel subscription as the client sees it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

from fastapi_channels.client.errors import SubscriptionDenied
from fastapi_channels.client.listeners import Listeners
from fastapi_channels.client.packets import Packet, PacketStream
from fastapi_channels.wire.history import Position

if TYPE_CHECKING:
    from fastapi_channels.client.connection import ChannelsClient

__all__ = ["Channel", "ChannelState"]

ChannelState = Literal["pending", "subscribed", "denied", "unsubscribed"]
_MISSING: Any = object()


class Channel(Listeners):
    """One subscription of a `ChannelsClient`; get it from ``await client.subscribe()``.

    After a reconnect the client subscribes again by itself; `state` is ``pending`` until
    the server answers, then ``subscribed`` (or ``denied``: the channel is then dropped and a
    ``channels:subscription`` event tells the client's listeners).

    On a history channel the client keeps the position of the last event it received and
    subscribes again from it, so the server replays what was missed before live events. When
    it cannot (the gap is no longer kept, or the history was lost), `recovered` is False
    and the ``channels:subscription`` event says ``recovered: False``: reload the state the
    channel's events build.

    On a presence channel, `members` follows the member list and its joins and leaves;
    the channel's callbacks also get ``channels:presence``, ``channels:join`` and
    ``channels:leave``.

    Attributes:
        name: the concrete channel name.
        state: ``pending``, ``subscribed``, ``denied`` or ``unsubscribed``.
        position: the last position received on a history channel (or the one the server
            said the channel continues from), else ``None``.
        recovered: after subscribing with a position, whether the server replayed everything
            missed since; ``None`` when no position was sent.
        members: a presence channel's members by id (their info, as the server sends it).
    """

    def __init__(self, client: ChannelsClient, name: str, since: Position | None = None) -> None:
        super().__init__()
        self.name = name
        self.state: ChannelState = "pending"
        self.position: Position | None = since
        self.recovered: bool | None = None
        self.members: dict[Any, Any] = {}
        self._client = client
        self._waiter: asyncio.Future[Channel] | None = None
        self._requested = False
        # Packets read with the subscription's answer, held until the awaiting code has run.
        self._held: list[Packet] | None = None

    def __repr__(self) -> str:
        return f"<Channel {self.name} {self.state}>"

    async def emit(self, event: str, data: Any = _MISSING) -> None:
        """Send ``event`` on this channel.

        Raises:
            ConnectionClosed: the client is not connected.
        """
        await self._client.emit(event, data, channel=self.name)

    async def request(
        self,
        event: str,
        data: Any = None,
        *,
        timeout: float | None = None,
        key: str | None = None,
        retries: int = 0,
        retry_delay: float = 0.5,
    ) -> Any:
        """Send ``event`` on this channel and return the reply's data (see ``client.request``).

        With ``retries`` it is sent again with the same idempotency ``key`` after
        ``outcome-unknown``, ``broker-unavailable`` or no reply (see ``client.request``).
        """
        return await self._client.request(
            event,
            data,
            channel=self.name,
            timeout=timeout,
            key=key,
            retries=retries,
            retry_delay=retry_delay,
        )

    def packets(self, event: str | None = None, maxsize: int = 1000) -> PacketStream:
        """A stream of this channel's packets (of one ``event`` if given), from now on."""
        return self._client.packets(event=event, channel=self.name, maxsize=maxsize)

    def __aiter__(self) -> PacketStream:
        return self.packets()

    async def unsubscribe(self) -> None:
        """Unsubscribe; this channel's callbacks are removed."""
        await self._client.unsubscribe(self.name)

    # ------------------------------------------------------------------ client side

    def _wait(self) -> asyncio.Future[Channel]:
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
            self._waiter.add_done_callback(_retrieve)
        return self._waiter

    def _settle(self, successful: bool, reason: str) -> bool:
        """Record the server's answer; returns whether someone was waiting for it."""
        self.state = "subscribed" if successful else "denied"
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return False
        if successful:
            waiter.set_result(self)
            self._held = []  # released by the client after the awaiting task has run
        else:
            waiter.set_exception(SubscriptionDenied(self.name, reason))
        return True


def _retrieve(future: asyncio.Future[Channel]) -> None:
    """Mark the outcome as seen, so an unawaited refusal is not reported as never retrieved."""
    if not future.cancelled():
        future.exception()
