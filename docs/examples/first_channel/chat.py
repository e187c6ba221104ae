"""The first tutorial's chat.py (docs/first-channel.md): chat rooms anyone may join.

The page shows its sections as the reader's whole chat.py; its tests are test_chat.py beside it,
which imports it as ``chat``, as in the reader's project (this directory is no package, so
pytest puts it on the path). scripts/check-wheel runs the page's code from an installed wheel.
"""

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
