"""broadcaster on Starlette: one ``subscribe`` per connection, one ``publish`` per broadcast.

Shaped as broadcaster's README chat app: the websocket endpoint runs a receiver and a sender in
an anyio task group; the sender iterates ``broadcast.subscribe(channel)`` and sends each event's
message as it is. A broadcast publishes the frame's text once. The backend is ``memory://``,
or with ``BENCH_BROKER`` Redis Pub/Sub (one Redis subscription per channel and process). The
JWT comes from the subprotocol, as for every server here. broadcaster's subscriber queues are
unbounded (it has no setting for them).

``Broadcast.subscribe`` is not safe for concurrent first subscribers of a channel when the
backend's ``subscribe`` waits (Redis): each sees no subscribers, awaits the backend, then sets
the channel's subscribers to its own queue alone, so the other connection never gets an event
and raises ``KeyError`` when it leaves. Connections here arrive 50 at a time, so subscribing is
serialised with a lock, as an application would have to.

With redis-py 8 (what pip installs today; 5 and 6 are not affected) the Redis backend's listener
wakes on its first subscription before redis-py has recorded it, finds nothing subscribed, ends,
and waits for a next first subscription: for a channel that already has subscribers there is
none, and no event ever arrives. A standing subscription to a side channel, taken in the
lifespan before any client's, keeps the listener alive. It costs nothing per delivery.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from bench.common import EVENT, ROOM, Bench, payload, redis_broker, with_controls
from bench.envuso import READY, channel_event, encode, requested_channel, subscribed, user

broker = redis_broker()
broadcast = Broadcast(broker[0] if broker else "memory://")
prefix = f"{broker[1]}:" if broker else ""
"""Topics are prefixed as the driver asks: other runs may share the Redis server."""

members: set[WebSocket] = set()
subscribing = asyncio.Lock()


async def chatroom_ws(websocket: WebSocket) -> None:
    token = websocket.headers.get("sec-websocket-protocol", "")
    if user(token) is None:
        await websocket.close()  # before accepting: the handshake is refused
        return
    await websocket.accept(subprotocol=token)
    await websocket.send_text(READY)
    channel = requested_channel(json.loads(await websocket.receive_text()))
    if channel is None:
        await websocket.close()
        return
    async with anyio.create_task_group() as task_group:

        async def run_receiver() -> None:
            async for _ in websocket.iter_text():
                pass
            task_group.cancel_scope.cancel()

        task_group.start_soon(run_receiver)
        await sender(websocket, channel)


async def sender(websocket: WebSocket, channel: str) -> None:
    async with AsyncExitStack() as stack:
        async with subscribing:
            subscriber = await stack.enter_async_context(broadcast.subscribe(prefix + channel))
        members.add(websocket)
        try:
            await websocket.send_text(encode(subscribed(channel)))
            async for event in subscriber:
                await websocket.send_text(event.message)
        finally:
            members.discard(websocket)


async def publish(seq: int) -> None:
    frame = encode(channel_event(ROOM, EVENT, payload(seq)))
    await broadcast.publish(channel=prefix + ROOM, message=frame)


bench = Bench(publish, lambda: len(members))


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with broadcast, broadcast.subscribe(prefix + "standing"), bench.running():
        yield


peer = Starlette(routes=[WebSocketRoute("/ws", chatroom_ws)], lifespan=lifespan)
app = with_controls(peer, bench)
