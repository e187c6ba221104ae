"""The Python client: a bot that answers in a conversation of the private chat.

The page docs/clients.md shows it as the reader's bot.py; `check` runs this file as the reader
would (`python bot.py URL`) against the private chat (docs/examples/private/private_chat.py)
served by uvicorn on a free loopback port.
"""

# --8<-- [start:bot]
import asyncio
import sys

import httpx

from fastapi_channels.client import ChannelsClient, Packet, SubscriptionDenied


async def log_in(base: str, username: str, password: str) -> str:
    async with httpx.AsyncClient(base_url=base) as http:
        response = await http.post("/login", json={"username": username, "password": password})
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token


async def echo_bot(base: str, password: str) -> None:
    """Bob's bot: it echoes what Ann says in their conversation until she says bye."""

    async def token() -> str:  # asked before every connection attempt: never a stale token
        return await log_in(base, "bob", password)

    url = base.replace("http", "ws", 1) + "/ws"  # http://host:port -> ws://host:port/ws
    async with ChannelsClient(url, token=token) as client:

        @client.on("notification")  # plain events; callbacks may be plain or async
        def notified(packet: Packet) -> None:
            print("a message from", packet.data["from"])

        contacts = await client.request("contacts")  # a request: the handler's return value
        try:
            chat = await client.subscribe(contacts["ann"])  # "dm:ann.bob"
        except SubscriptionDenied as exc:
            print("refused:", exc.reason)
            return

        async with chat.packets("message") as lines:  # buffered from here on
            await chat.emit("message", {"text": "bob's bot is listening"})
            async for packet in lines:
                line = packet.data
                if line["author"] == "bob":
                    continue  # our own lines come back too
                if line["text"] == "bye":
                    break
                await chat.emit("message", {"text": f"you said: {line['text']}"})


if __name__ == "__main__":  # python bot.py [the app's URL, http://127.0.0.1:8000 by default]
    base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
    asyncio.run(echo_bot(base, "battery staple"))  # Bob's password in the tutorial
# --8<-- [end:bot]


async def check() -> None:
    """Ann talks to the bot over a real server; the bot echoes her and stops at bye."""
    from docs.examples.private.private_chat import app
    from tests.live import live_server

    async with live_server(app) as host, asyncio.timeout(20):
        base = f"http://{host}"
        token = await log_in(base, "ann", "correct horse")
        async with ChannelsClient(f"ws://{host}/ws", token=token) as ann:
            chat = await ann.subscribe("dm:ann.bob")
            async with chat.packets("message") as lines:
                bot = await asyncio.create_subprocess_exec(
                    sys.executable, __file__, base, stdout=asyncio.subprocess.PIPE
                )
                assert (await lines.get(timeout=5)).data["text"] == "bob's bot is listening"
                await chat.emit("message", {"text": "hello"})
                assert (await lines.get(timeout=5)).data["author"] == "ann"
                assert (await lines.get(timeout=5)).data == {
                    "author": "bob",
                    "text": "you said: hello",
                }
                await chat.emit("message", {"text": "bye"})
                output, _ = await bot.communicate()
                assert bot.returncode == 0
                assert b"a message from ann" in output
