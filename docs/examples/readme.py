"""The README's example, verbatim between the markers (tests/test_docs_examples.py compares them).

Run it with `uvicorn docs.examples.readme:app --ws-max-size 65536`; a connection's user is
`?user=<name>`.
"""

# --8<-- [start:readme]
from fastapi import FastAPI
from fastapi.requests import HTTPConnection

from fastapi_channels import ChannelListener, Channels, Inject, SocketServer, channel


def current_user(connection: HTTPConnection) -> str | None:  # any dependency; see JWTAuth
    return connection.query_params.get("user")


@channel("chat:*")  # chat:lobby, chat:games, ...
class Chat(ChannelListener):
    async def is_authorised(self, user: str | None) -> bool:
        return user is not None  # decide per user and channel: self.channel_name

    @channel.on("message")
    async def message(self, user: str, data: str) -> None:
        await self.broadcast(self.channel_name, "message", {"from": user, "text": data})


channels = Channels(user=current_user, listeners=[Chat])
app = FastAPI()
app.include_router(channels.router)  # the websocket endpoint at /ws, and its lifespan


@app.post("/rooms/{room}/announce")
async def announce(room: str, text: str, server: SocketServer = Inject(SocketServer)) -> None:
    await server.broadcast(Chat, f"chat:{room}", "message", {"from": "staff", "text": text})


# --8<-- [end:readme]


async def check() -> None:
    """Anonymous connections are refused, a message reaches the room, HTTP announces."""
    from docs.examples._support import started
    from fastapi_channels.testing import SocketTestClient

    async with (
        started(app) as http,
        SocketTestClient(app, query_string="user=ann") as ann,
        SocketTestClient(app) as anonymous,
    ):
        assert (await anonymous.subscribe("chat:lobby"))["reason"] == "not authorised"
        assert (await ann.subscribe("chat:lobby"))["successful"]
        await ann.emit("message", "hi", channel="chat:lobby")
        assert (await ann.receive()).data == {"from": "ann", "text": "hi"}
        await http.post("/rooms/lobby/announce", params={"text": "tea at four"})
        assert (await ann.receive()).data == {"from": "staff", "text": "tea at four"}
