"""The samples of docs/http-api.md: turning the API on, and the curl commands against it."""

from __future__ import annotations

import os

from fastapi import FastAPI

from fastapi_channels import ChannelListener, Channels, History, channel

os.environ.setdefault("CHANNELS_API_KEY", "docs-example-key")  # set by the deployment


@channel("room:*")
class Room(ChannelListener):
    pass


@channel("lobby:*")
class Lobby(ChannelListener):
    presence = True
    history = History(size=50)


# --8<-- [start:setup]
from fastapi_channels import api_key

channels = Channels(
    listeners=[Room, Lobby],
    api_guard=api_key(os.environ["CHANNELS_API_KEY"]),  # or any dependency raising 401/403
)
app = FastAPI()
app.include_router(channels.router)  # the API is under /ws/api, in the app's OpenAPI document
# --8<-- [end:setup]


async def check() -> None:
    """Each curl section runs against the app under uvicorn and gets the answer shown."""
    import asyncio
    import json
    import re
    import sys
    from pathlib import Path

    from tests.live import live_server

    script = (Path(__file__).parent / "http_api.sh").read_text()

    def section(name: str) -> str:
        found = re.search(rf"\[start:{name}\]\n(.*?)\n# --8<-- \[end:{name}\]", script, re.S)
        assert found is not None
        return found[1]

    async with live_server(app) as address:
        bin_dir = str(Path(sys.executable).parent)
        env = {
            **os.environ,
            "BASE": f"http://{address}/ws/api",
            "API_KEY": os.environ["CHANNELS_API_KEY"],
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        }

        async def run(name: str) -> list[object]:
            """The JSON values the section printed (curl adds no newline between them)."""
            shell = await asyncio.create_subprocess_exec(
                "bash", "-euc", section(name), env=env, stdout=asyncio.subprocess.PIPE
            )
            async with asyncio.timeout(30):
                out, _ = await shell.communicate()
            assert shell.returncode == 0, (name, out)
            text, values, at = out.decode(), [], 0
            decoder = json.JSONDecoder()
            while at < len(text.rstrip()):
                value, at = decoder.raw_decode(text, at)
                values.append(value)
                while at < len(text) and text[at].isspace():
                    at += 1
            return values

        assert await run("publish") == [{"position": None}]
        [first], [again] = [await run("publish-key") for _ in range(2)]
        assert first == again  # delivered and stored once: the same position
        assert await run("users") == [{"ok": True}, {"ok": True}]
        presence, history, counts = await run("reads")
        assert presence == {"channel": "lobby:1", "members": []}
        assert history["messages"][0]["position"] == first["position"]  # type: ignore[index]
        assert len(history["messages"]) == 1  # type: ignore[index]
        assert counts["missing"] == []  # type: ignore[index]
        assert await run("cli") == [{"position": None}]
