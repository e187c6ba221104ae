"""The samples of docs/deployment.md: the broker, partial delivery, the health check, restarts."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Response
from pydantic import BaseModel

from fastapi_channels import (
    BrokerError,
    ChannelListener,
    Channels,
    Inject,
    Limits,
    SocketServer,
    channel,
)


@channel("global-chat")
class GlobalChat(ChannelListener):
    """Anyone may subscribe."""


def configured() -> list[Channels]:
    """The ways to name the broker in code (not started: nothing connects here)."""
    # --8<-- [start:broker]
    from fastapi_channels import Channels
    from fastapi_channels.brokers.redis import RedisBroker

    channels = Channels(broker="redis://redis.internal:6379/0")
    # or, with options:
    channels = Channels(broker=RedisBroker("redis://redis.internal:6379/0", prefix="shop"))
    # --8<-- [end:broker]
    # --8<-- [start:sentinel]
    sentinel = "redis+sentinel://:secret@sentinel-1:26379,sentinel-2:26379,sentinel-3:26379"
    channels_ha = Channels(broker=f"{sentinel}/mymaster/0?sentinel_password=other-secret")
    # --8<-- [end:sentinel]
    # --8<-- [start:cluster]
    seeds = "redis-1:6379,redis-2:6379,redis-3:6379"
    channels_sharded = Channels(broker=f"redis+cluster://:secret@{seeds}?prefix=shop")
    # --8<-- [end:cluster]
    return [
        Channels(broker="redis://redis.internal:6379/0"),
        channels,
        channels_ha,
        channels_sharded,
    ]


def on_nats() -> list[Channels]:
    """The NATS broker, named by URL or configured (not started: nothing connects here)."""
    # --8<-- [start:nats]
    from fastapi_channels import Channels
    from fastapi_channels.brokers.nats import NatsBroker

    channels = Channels(broker="nats://nats.internal:4222?prefix=shop")
    # or, with options:
    channels = Channels(broker=NatsBroker("nats://nats.internal:4222", prefix="shop", timeout=2.0))
    # --8<-- [end:nats]
    return [Channels(broker="nats://nats.internal:4222?prefix=shop"), channels]


channels = Channels(listeners=[GlobalChat])  # the broker: $FASTAPI_CHANNELS_BROKER_URL, else memory
app = FastAPI()
app.include_router(channels.router)


class Announcement(BaseModel):
    text: str


# --8<-- [start:partial]
@app.post("/announce")
async def announce(
    body: Announcement, response: Response, server: SocketServer = Inject(SocketServer)
) -> dict[str, str]:
    try:
        await server.broadcast(GlobalChat, "global-chat", "message", body)
    except BrokerError:  # delivered on this process; not known to be delivered elsewhere
        response.status_code = 503
        return {"delivered": "this process only"}
    return {"delivered": "everywhere"}


# --8<-- [end:partial]


# --8<-- [start:health]
@app.get("/health")
async def health(server: SocketServer = Inject(SocketServer)) -> dict[str, Any]:
    """This process's state, and whether its broker reaches the other processes."""
    return server.health()


# --8<-- [end:health]


def restartable() -> Channels:
    """A ``Channels`` whose restarts spread its clients' returns over 20 seconds."""
    # --8<-- [start:restarts]
    # Clients come back over 20 s after a restart; run uvicorn with a graceful shutdown
    # timeout above it and close_timeout: uvicorn app:app --timeout-graceful-shutdown 30
    channels = Channels(listeners=[GlobalChat], limits=Limits(reconnect_spread=20.0))
    # --8<-- [end:restarts]
    return channels


async def check() -> None:
    """The brokers named in code; a failing broker's 503 reaching local subscribers first."""
    from docs.examples._support import started
    from fastapi_channels.brokers.redis import RedisBroker
    from fastapi_channels.testing import SocketTestClient

    assert all(isinstance(c.server.broker, RedisBroker) for c in configured())
    from fastapi_channels.brokers.nats import NatsBroker

    nats = [c.server.broker for c in on_nats()]
    assert all(isinstance(b, NatsBroker) and b.prefix == "shop" for b in nats)

    async with started(app) as http, SocketTestClient(app) as client:
        assert (await client.subscribe("global-chat"))["successful"]
        health = (await http.get("/health")).json()
        assert health["healthy"] and health["broker"]["state"] == "connected"
        assert (await http.post("/announce", json={"text": "one"})).status_code == 200
        assert (await client.receive()).data == {"text": "one"}

        broker = channels.server.broker
        publish = broker.publish

        async def publish_locally(topic: str, data: bytes) -> None:
            await publish(topic, data)  # local subscribers get it, then the network fails
            raise BrokerError("Redis is unreachable")

        broker.publish = publish_locally  # type: ignore[method-assign]
        try:
            response = await http.post("/announce", json={"text": "two"})
        finally:
            broker.publish = publish  # type: ignore[method-assign]
        assert response.status_code == 503
        assert response.json() == {"delivered": "this process only"}
        assert (await client.receive()).data == {"text": "two"}

    # A restart tells a client that announced reconnect-advice when to come back.
    spread = restartable()
    other = FastAPI()
    other.include_router(spread.router)
    query = "channels-features=reconnect-advice"
    async with started(other):
        ours = SocketTestClient(other, query_string=query)
        await ours.expect_ready()
    advice = await ours.receive()
    assert advice.event == "disconnect" and 0 <= advice.data["reconnect_after"] <= 20
    assert (await ours.receive_closed())[0] == 1012
