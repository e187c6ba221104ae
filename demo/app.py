"""The demo chat: ``scripts/demo``, or ``uvicorn demo.app:app --ws-max-size 65536``.

The page is at ``/``, the channels endpoint at ``/ws``. With ``REDIS_URL`` set, the processes
of the app share a Redis broker, so it runs on several workers (``scripts/demo`` then starts
two); without it, everything stays in this process's memory.

- :mod:`demo.auth`: ``POST /login`` (a name, no password) answers a JWT; the admin guard.
- :mod:`demo.chat`: the channels (``global-chat``, with who is online, and each user's
  ``chat:user.<name>`` inbox, both keeping their recent messages) and the ``typing`` listener.
- here: ``POST /announce`` and ``GET /history/{channel}``, HTTP routes that use the channels.
- ``demo/static/``: the page, built on the JavaScript client the app serves at
  ``/ws/client.js``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from demo import auth, chat
from demo.users import Directory
from fastapi_channels import Channels, Inject, SocketServer
from fastapi_channels.auth import TokenUser
from fastapi_channels.wire.history import position_data

STATIC = Path(__file__).with_name("static")

# --8<-- [start:app]
channels = Channels(
    user=auth.auth,  # the JWT from POST /login; connections without one are refused
    listeners=chat.LISTENERS,
    broker=os.environ.get("REDIS_URL"),  # None: in memory (or FASTAPI_CHANNELS_BROKER_URL)
)
channels.container.binder.bind(Directory, to=Directory(os.environ.get("REDIS_URL")))
app = FastAPI(title="fastapi_channels demo")
app.include_router(channels.router)
app.include_router(auth.router)


@app.post("/announce", status_code=204, dependencies=[Depends(auth.require_admin)])
async def announce(body: chat.Announcement, server: SocketServer = Inject(SocketServer)) -> None:
    """Broadcast an announcement to the room from HTTP (bearer: ``DEMO_ADMIN_TOKEN``)."""
    announced = chat.Announced(text=body.text)
    await server.broadcast(chat.GlobalChat, "global-chat", "announcement", announced)


@app.get("/history/{channel}")
async def history(
    channel: str,
    user: TokenUser = Depends(auth.auth.required),
    server: SocketServer = Inject(SocketServer),
) -> dict[str, Any]:
    """The messages the room, or your own inbox, keeps: the page loads them, then subscribes
    from ``position`` so that it misses nothing and gets nothing twice."""
    if channel not in ("global-chat", chat.inbox(user.id)):
        raise HTTPException(403, "only the room and your own inbox")
    page = await server.history(channel)
    return {
        "position": position_data(page.position),
        "messages": [
            {"event": m.event, "data": m.data, "position": position_data(m.position)}
            for m in page.messages
        ],
    }


# --8<-- [end:app]


# --8<-- [start:health]
@app.get("/health")
async def health(server: SocketServer = Inject(SocketServer)) -> dict[str, Any]:
    """This process's state, and whether its broker reaches the other processes.

    Public, so without the broker's last error (it can name the Redis host).
    """
    return server.health(errors=False)


# --8<-- [end:health]


@app.get("/", include_in_schema=False)
async def page() -> FileResponse:
    """The chat page; its script imports the JavaScript client from ``/ws/client.js``."""
    return FileResponse(STATIC / "index.html")


app.mount("/static", StaticFiles(directory=STATIC), name="static")
