"""What presence and history cost, next to a plain channel, in one process.

Usage: ``python -m bench.presence_history [redis://127.0.0.1:6379/0] [broadcasts] [subscribers]``

For each broker (memory, then Redis when reachable) it reports:

- broadcasts per second to a plain channel and to a history channel, each with ``subscribers``
  connections over a transport that discards frames, awaiting each broadcast and concurrently;
- how long a subscriber takes to recover 100 missed messages (response plus replay);
- how long ``subscribers`` users take to join a presence channel at once.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
import uuid
from typing import Any

from fastapi_channels import ChannelListener, Channels, History, SocketConnection, channel
from fastapi_channels.brokers import Broker, MemoryBroker
from fastapi_channels.brokers.redis import RedisBroker
from fastapi_channels.core.channel import Subscription
from fastapi_channels.wire.history import parse_since

_ids = itertools.count()


@channel("plain:*")
class Plain(ChannelListener):
    pass


@channel("kept:*")
class Kept(ChannelListener):
    history = History(size=1000)


@channel("here:*")
class Here(ChannelListener):
    presence = True


class Discard:
    """A transport that takes every frame at once and counts them, until ``target``."""

    def __init__(self, target: int = 0) -> None:
        self.frames = 0
        self.target = target
        self.reached = asyncio.Event()

    async def send_text(self, text: str) -> None:
        self.frames += 1
        if self.frames >= self.target:
            self.reached.set()

    async def close(self, code: int, reason: str) -> None:
        return None


async def subscribe(
    channels: Channels, connection: SocketConnection, name: str, since: Any = None
) -> None:
    resolved = channels.registry.specs.resolve(name)
    assert resolved is not None
    spec, wildcard = resolved
    sub = Subscription(name, wildcard, spec)
    await channels.server.add_subscription(connection, sub)
    caught = await channels.server.catch_up(connection, sub, parse_since(since))
    if caught is not None:
        caught.finish(connection)


async def connection(channels: Channels, n: int, transport: Discard) -> SocketConnection:
    made = SocketConnection(
        transport, id=f"c{next(_ids)}", user_key=f"u{n}", user={"id": n}, max_queue=1_000_000
    )
    made.start()
    await channels.server.add_connection(made)  # closed when the server stops
    return made


async def rates(channels: Channels, name: str, count: int, subscribers: int) -> str:
    transports = [Discard(count + count // 10) for _ in range(subscribers)]
    for n, transport in enumerate(transports):
        await subscribe(channels, await connection(channels, n, transport), name)
    listener = Kept if name.startswith("kept") else Plain
    server = channels.server
    started = time.perf_counter()
    for n in range(count // 10):
        await server.broadcast(listener, name, "tick", n)
    awaited = (count // 10) / (time.perf_counter() - started)
    started = time.perf_counter()
    await asyncio.gather(*(server.broadcast(listener, name, "tick", n) for n in range(count)))
    async with asyncio.timeout(60):
        await transports[-1].reached.wait()
    concurrent = count / (time.perf_counter() - started)
    return f"{awaited:>9,.0f}/s awaited, {concurrent:>9,.0f}/s concurrent"


async def recovery(channels: Channels) -> str:
    server = channels.server
    await server.broadcast(Kept, "kept:r", "tick", 0)
    since = (await server.history("kept:r")).position
    for n in range(100):
        await server.broadcast(Kept, "kept:r", "tick", n)
    transport = Discard(100)
    started = time.perf_counter()
    since_data = {"offset": since.offset, "epoch": since.epoch}
    await subscribe(channels, await connection(channels, -1, transport), "kept:r", since_data)
    async with asyncio.timeout(10):
        await transport.reached.wait()
    return f"{(time.perf_counter() - started) * 1000:.1f} ms for 100 missed messages"


async def joins(channels: Channels, users: int) -> str:
    made = [await connection(channels, -2 - n, Discard()) for n in range(users)]
    started = time.perf_counter()
    await asyncio.gather(*(subscribe(channels, c, "here:j") for c in made))
    elapsed = time.perf_counter() - started
    count = await channels.server.presence_count("here:j")
    return f"{users} users joined in {elapsed * 1000:.0f} ms ({count} members)"


async def run(label: str, broker: Broker, count: int, subscribers: int) -> None:
    channels = Channels(listeners=[Plain, Kept, Here], broker=broker)
    async with channels:
        plain = await rates(channels, "plain:1", count, subscribers)
        kept = await rates(channels, "kept:1", count, subscribers)
        print(f"{label:>6} plain channel:   {plain}  ({subscribers} subscribers)")
        print(f"{label:>6} history channel: {kept}")
        print(f"{label:>6} recovery: {await recovery(channels)}")
        print(f"{label:>6} presence: {await joins(channels, subscribers)}")


async def main(url: str, count: int, subscribers: int) -> None:
    await run("memory", MemoryBroker(), count, subscribers)
    redis = RedisBroker(url, prefix=f"bench-{uuid.uuid4().hex[:8]}")
    try:
        await run("redis", redis, count, subscribers)
    except Exception as exc:  # no Redis here: the memory figures stand alone
        print(f"redis: skipped ({exc})")


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        main(
            args[0] if args else "redis://127.0.0.1:6379/0",
            int(args[1]) if len(args) > 1 else 5000,
            int(args[2]) if len(args) > 2 else 100,
        )
    )
