"""Capacity of the Redis Cluster broker: publishes per second on 1 shard, and on 3.

Usage: ``python -m bench.redis_cluster [--duration 10] [--processes 4] [--channels 256]``

Starts a Redis Cluster of one master, then one of three, on free loopback ports
(`tests.redis_cluster.ClusterGroup`; ``redis-server`` and ``redis-cli`` must be on PATH). On each,
``--processes`` publisher processes, each with one `RedisClusterBroker` and ``--concurrency``
publishing tasks, publish 100-byte messages for ``--duration`` seconds over ``--channels``
topics (so their slots spread over the shards), and one receiver process subscribed to every
topic counts what arrives. Prints a table, then one JSON line per cluster: messages published
per second (each acknowledged by Redis), ``SPUBLISH`` commands per second (the broker packs a
topic's messages of one round trip into one), and the share delivered to the receiver.

The publishers and the receiver share the machine with Redis: on a small machine they, not
Redis, may be the bound, and the 3-shard figure then says little. Run it on a quiet machine
with cores to spare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from fastapi_channels.brokers.redis_cluster import RedisClusterBroker

PAYLOAD = b"x" * 100


@dataclass
class Result:
    shards: int
    processes: int
    duration: float
    published: int
    spublish: int
    received: int

    @property
    def per_second(self) -> float:
        return self.published / self.duration

    def row(self) -> str:
        delivered = self.received / self.published if self.published else 0.0
        return (
            f"{self.shards:>6} {self.per_second:>14,.0f} "
            f"{self.spublish / self.duration:>13,.0f} {delivered:>10.1%}"
        )


def _topics(channels: int) -> list[str]:
    return [f"c:bench.{i}" for i in range(channels)]


async def _publish(url: str, prefix: str, options: dict[str, Any], out: Any) -> None:
    broker = RedisClusterBroker(url, prefix=prefix)
    await broker.start(lambda topic, data: None)
    topics = _topics(options["channels"])
    deadline = time.monotonic() + options["duration"]
    published = 0

    async def task(start: int) -> None:
        nonlocal published
        i = start
        while time.monotonic() < deadline:
            await broker.publish(topics[i % len(topics)], PAYLOAD)
            published += 1
            i += 1

    await asyncio.gather(*(task(n) for n in range(options["concurrency"])))
    out.put((published, broker.stats.payloads_sent))
    await broker.stop()


async def _receive(url: str, prefix: str, options: dict[str, Any], ready: Any, out: Any) -> None:
    """Count deliveries until the publishers' total (sent on ``expected``) arrived, or 30 s."""
    received, target = 0, -1
    done = asyncio.Event()

    def on_message(topic: str, data: bytes) -> None:
        nonlocal received
        received += 1
        if received == target:
            done.set()

    broker = RedisClusterBroker(url, prefix=prefix)
    await broker.start(on_message)
    for topic in _topics(options["channels"]):
        await broker.subscribe(topic)
    ready.set()
    target = await asyncio.to_thread(options["expected"].get)
    if received < target:
        try:
            async with asyncio.timeout(30):
                await done.wait()
        except TimeoutError:
            pass  # reported as a share delivered below 100 %
    out.put(received)
    await broker.stop()


def _publisher(url: str, prefix: str, options: dict[str, Any], out: Any) -> None:
    asyncio.run(_publish(url, prefix, options, out))


def _receiver(url: str, prefix: str, options: dict[str, Any], ready: Any, out: Any) -> None:
    asyncio.run(_receive(url, prefix, options, ready, out))


def measure(shards: int, options: dict[str, Any]) -> Result:
    """Start a cluster of ``shards`` masters, load it, stop it; return what was measured."""
    from tests.redis_cluster import ClusterGroup

    context = multiprocessing.get_context("spawn")
    cluster = ClusterGroup.start(masters=shards)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        results, counts = context.Queue(), context.Queue()
        ready, expected = context.Event(), context.Queue()
        receiver = context.Process(
            target=_receiver,
            args=(cluster.url, prefix, {**options, "expected": expected}, ready, counts),
        )
        receiver.start()
        if not ready.wait(60):
            raise RuntimeError("the receiver did not subscribe within 60 s")
        publishers = [
            context.Process(target=_publisher, args=(cluster.url, prefix, options, results))
            for _ in range(options["processes"])
        ]
        for process in publishers:
            process.start()
        sums = [results.get(timeout=options["duration"] + 60) for _ in publishers]
        for process in publishers:
            process.join(60)
        expected.put(sum(p for p, _ in sums))
        received = counts.get(timeout=60)
        receiver.join(60)
    finally:
        cluster.close()
    return Result(
        shards=shards,
        processes=options["processes"],
        duration=options["duration"],
        published=sum(p for p, _ in sums),
        spublish=sum(s for _, s in sums),
        received=received,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per cluster")
    parser.add_argument("--processes", type=int, default=4, help="publisher processes")
    parser.add_argument("--concurrency", type=int, default=64, help="publishing tasks each")
    parser.add_argument("--channels", type=int, default=256, help="topics published to")
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 3])
    args = parser.parse_args()
    options = {
        "duration": args.duration,
        "processes": args.processes,
        "concurrency": args.concurrency,
        "channels": args.channels,
    }
    results = [measure(shards, options) for shards in args.shards]
    print(f"{'shards':>6} {'publishes/s':>14} {'SPUBLISH/s':>13} {'delivered':>10}")
    for result in results:
        print(result.row())
    base = results[0].per_second
    for result in results:
        line = {**asdict(result), "per_second": round(result.per_second)}
        line["scaling"] = round(result.per_second / base, 2) if base else None
        print(json.dumps(line))


if __name__ == "__main__":
    main()
