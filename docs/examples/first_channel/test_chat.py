"""The first tutorial's test_chat.py (docs/first-channel.md), and one more test."""

# --8<-- [start:test]
from chat import app

from fastapi_channels.testing import SocketTestClient, lifespan


async def test_a_message_reaches_everyone_in_the_room_and_no_one_else() -> None:
    async with (
        lifespan(app),  # starts the app, and with it the channels server
        SocketTestClient(app) as ann,  # one websocket connection each, in-process
        SocketTestClient(app) as bob,
        SocketTestClient(app) as eve,
    ):
        for client in (ann, bob):
            assert (await client.subscribe("room.lobby"))["successful"]
        assert (await eve.subscribe("room.games"))["successful"]

        await ann.emit("message", {"text": "hello"}, channel="room.lobby")

        for client in (ann, bob):
            packet = await client.receive()  # waits two seconds at most
            assert packet == {
                "event": "message",
                "channel": "room.lobby",
                "data": {"room": "lobby", "text": "hello"},
            }
        await eve.assert_no_message()


# --8<-- [end:test]


async def test_a_room_that_is_no_room_and_bad_data() -> None:
    async with lifespan(app), SocketTestClient(app) as ann:
        refused = await ann.subscribe("hall")
        assert refused["reason"] == "no channel matches this name"
        assert (await ann.subscribe("room.lobby"))["successful"]
        await ann.emit("message", {"words": "hello"}, channel="room.lobby")
        error = await ann.receive()
        assert error.data["code"] == "invalid-data"
        problem = {"loc": ["text"], "msg": "Field required", "type": "missing"}
        assert error.data["errors"] == [problem]
