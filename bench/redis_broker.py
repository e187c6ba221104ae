"""Throughput of the Redis broker between two brokers ("processes") in one event loop.

Usage: ``python bench/redis_broker.py [redis://127.0.0.1:6379/0] [messages] [size]``

Measures one publisher awaiting each publish (no batching possible), then many concurrent
publishers (batched), and reports messages per second, Redis messages sent, and the time until
the other broker has received everything.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

from fastapi_channels.brokers.redis import RedisBroker


async def main(url: str, count: int, size: int) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    publisher, receiver = RedisBroker(url, prefix=prefix), RedisBroker(url, prefix=prefix)
    received = 0
    done = asyncio.Event()
    target = 0

    def on_message(topic: str, data: bytes) -> None:
        nonlocal received
        received += 1
        if received >= target:
            done.set()

    await publisher.start(lambda topic, data: None)
    await receiver.start(on_message)
    await receiver.subscribe("bench")
    payload = b"x" * size
    try:
        for label, concurrent in (("one at a time", False), ("concurrent", True)):
            n = count // 10 if not concurrent else count
            received, target = 0, n
            done.clear()
            before = publisher.stats.payloads_sent
            started = time.perf_counter()
            if concurrent:
                await asyncio.gather(*(publisher.publish("bench", payload) for _ in range(n)))
            else:
                for _ in range(n):
                    await publisher.publish("bench", payload)
            published = time.perf_counter() - started
            async with asyncio.timeout(60):
                await done.wait()
            delivered = time.perf_counter() - started
            sent = publisher.stats.payloads_sent - before
            print(
                f"{label:>14}: {n} messages of {size} B: published in {published:.3f} s "
                f"({n / published:,.0f}/s), all received after {delivered:.3f} s "
                f"({n / delivered:,.0f}/s), {sent} Redis messages"
            )
    finally:
        await publisher.stop()
        await receiver.stop()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        main(
            args[0] if args else "redis://127.0.0.1:6379/0",
            int(args[1]) if len(args) > 1 else 50_000,
            int(args[2]) if len(args) > 2 else 100,
        )
    )
