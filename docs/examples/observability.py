"""The samples of docs/observability.md: Prometheus metrics and the guarded info route."""

from __future__ import annotations

import os

from fastapi import FastAPI, Header, HTTPException

from fastapi_channels import ChannelListener, Channels, channel


@channel("global-chat")
class GlobalChat(ChannelListener):
    """Anyone may subscribe."""


# --8<-- [start:info]
ADMIN_TOKEN = os.environ.get("ADMIN_TOKEN", "")


def require_admin(authorization: str = Header("")) -> None:
    """Lets through only requests that carry the operators' token."""
    if not ADMIN_TOKEN or authorization != f"Bearer {ADMIN_TOKEN}":
        raise HTTPException(403, "operators only")


channels = Channels(listeners=[GlobalChat], info_guard=require_admin)  # adds GET /ws/info
# --8<-- [end:info]

# --8<-- [start:metrics]
from fastapi_channels.prometheus import metrics_app

app = FastAPI()
app.include_router(channels.router)
app.mount("/metrics", metrics_app(channels))
# --8<-- [end:metrics]


async def check() -> None:
    """Scrape the metrics and read the info route, with and without the operators' token."""
    from docs.examples._support import started
    from fastapi_channels.testing import SocketTestClient

    global ADMIN_TOKEN
    ADMIN_TOKEN = "let-me-see"
    async with started(app) as http, SocketTestClient(app) as client:
        assert (await client.subscribe("global-chat"))["successful"]
        metrics = (await http.get("/metrics/")).text
        assert "fastapi_channels_connections 1.0" in metrics
        assert "fastapi_channels_subscriptions 1.0" in metrics
        assert (await http.get("/ws/info")).status_code == 403
        info = await http.get("/ws/info", headers={"Authorization": "Bearer let-me-see"})
        assert info.json()["busiest_channels"] == {"global-chat": 1}
