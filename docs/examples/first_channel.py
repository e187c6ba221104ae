"""The first channel of the tutorial: chat rooms anyone may join.

Run it with `uvicorn docs.examples.first_channel:app` (see docs/first-channel.md); its tests
are `docs/examples/test_first_channel.py`.
"""

from __future__ import annotations

# --8<-- [start:listener]
from fastapi import FastAPI
from pydantic import BaseModel

from fastapi_channels import ChannelListener, Channels, channel


class Message(BaseModel):
    text: str


@channel("room.*")  # serves room.lobby, room.games, ...: the * matches one name
class Room(ChannelListener):
    """Chat rooms; anyone may join any room."""

    @channel.on("message")
    async def message(self, message: Message) -> None:
        await self.broadcast(
            self.channel_name,  # the room this message was sent on, e.g. "room.lobby"
            "message",
            {"room": self.wildcard, "text": message.text},  # wildcard: what * matched
        )


# --8<-- [end:listener]


# --8<-- [start:app]
channels = Channels(listeners=[Room])
app = FastAPI()
app.include_router(channels.router)
# --8<-- [end:app]
