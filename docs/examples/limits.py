"""The sample of docs/errors.md: setting limits, and what a client sees beyond them."""

from __future__ import annotations

from fastapi import FastAPI

from fastapi_channels import ChannelListener, Channels, channel


@channel("global-chat")
class GlobalChat(ChannelListener):
    @channel.on("message")
    async def message(self, data: str) -> None:
        await self.broadcast(self.channel_name, "message", data)


# --8<-- [start:limits]
from fastapi_channels import Limits, OverflowPolicy

channels = Channels(
    listeners=[GlobalChat],
    limits=Limits(
        max_message_size=4096,  # bytes per inbound frame; beyond: close 1009
        rate=5,  # packets per second per connection, on average
        burst=10,  # at once above the rate; beyond: the packet is answered rate-limited
        queue_size=200,  # frames waiting for a slow peer
        overflow=OverflowPolicy.DROP_OLDEST,  # then: drop its oldest, keep the connection
        max_connections_per_user=4,
    ),
)
# --8<-- [end:limits]
app = FastAPI()
app.include_router(channels.router)


async def check() -> None:
    """A burst beyond the rate is answered rate-limited; a frame too big closes with 1009."""
    from fastapi_channels.testing import SocketTestClient, lifespan

    async with lifespan(app), SocketTestClient(app) as client:
        assert (await client.subscribe("global-chat"))["successful"]  # the first packet
        for _ in range(10):
            await client.emit("message", "hi", channel="global-chat")
        for _ in range(9):
            assert (await client.receive()).data == "hi"
        error = await client.receive()
        assert (error.event, error.data["code"]) == ("channels:error", "rate-limited")

        await client.send_text("x" * 4097)
        assert (await client.receive()).data == {"reason": "message too big"}
        assert (await client.receive_closed())[0] == 1009
