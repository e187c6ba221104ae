"""Capacity per process: how many deliveries per second one server process takes in, per engine.

Usage::

    python -m bench.capacity [--engines memory,redis,nats] [--broker URL ...]
                             [--subscribers 100] [--publishers 2] [--duration 10] [--out FILE]

For each engine, one *receiving* process (pinned to the server's CPU, as in ``bench.run``) runs
``Channels`` on that broker with ``--subscribers`` connections subscribed to one channel, and
``--publishers`` processes (pinned to the other CPUs) broadcast ~100-byte packets to that channel
through the broker, as fast as the receiving process takes them in: publishers stop when they
are ``--window`` broadcasts ahead of what it delivered, so nothing piles up in the broker (Redis
would disconnect a subscriber whose output buffer overflows, NATS would drop messages), and the
receiving process is saturated. It reports, over ``--duration`` seconds after ``--warmup``:
broadcasts and deliveries (frames handed to connections) taken in per second, its CPU time per
delivery, and its CPU use (near 100 %: the process, not the broker, was the limit).

The connections write to a transport that takes each frame at once (no socket): with real
websockets, the clients reading N sockets each would need more CPU than the server, on the same
machine, and would be what was measured. So the figures are the broker's intake plus the
fan-out; the socket's own cost per delivery is what ``bench.run`` and ``bench.layers`` show.

The in-memory engine has no other process to publish from: its publisher runs in the receiving
process, whose CPU then includes publishing. ``memory``, ``redis`` and ``nats`` use
127.0.0.1:6379 and 127.0.0.1:4222 when they answer, else a ``redis-server`` or ``nats-server``
started for the run on a free port; ``--broker`` adds any broker URL (``redis+sentinel://``,
later ``redis+cluster://``), measured the same way. A prefix of the run's own is added to every
URL that does not name one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bench.common import EVENT, payload
from bench.presence_history import Discard, Plain, connection, subscribe
from bench.run import LOAD_CPUS, SERVER_CPUS, machine
from fastapi_channels import Channels

__all__ = ["main"]

CHANNEL = "plain:capacity"
BATCH = 50
"""Broadcasts a publisher sends at once, before it looks at how far ahead it is."""
DEFAULTS = {
    "memory": "memory://",
    "redis": "redis://127.0.0.1:6379/0",
    "nats": "nats://127.0.0.1:4222",
}
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Options:
    subscribers: int = 100
    publishers: int = 2
    duration: float = 10.0
    warmup: float = 2.0
    window: int = 2000


@dataclass(frozen=True)
class Result:
    engine: str
    url: str
    subscribers: int
    publishers: int
    seconds: float
    broadcasts_per_s: float
    deliveries_per_s: float
    cpu_us_per_delivery: float
    cpu_percent: float


# ---------------------------------------------------------------------- processes


def _pin(cpus: set[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)


def _run(coroutine: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


@dataclass(frozen=True)
class _Counts:
    """Shared by every process of a run: broadcasts published, and received by one subscriber."""

    published: Synchronized[int]
    received: Synchronized[int]


async def _flood(channels: Channels, counts: _Counts, window: int) -> None:
    """Broadcast until cancelled, staying at most ``window`` broadcasts ahead of the receiver."""
    server, seq, published = channels.server, 0, counts.published
    while True:
        if published.value - counts.received.value > window:
            await asyncio.sleep(0.001)  # the receiver is behind: let it take them in
            continue
        await asyncio.gather(
            *(server.broadcast(Plain, CHANNEL, EVENT, payload(seq + i)) for i in range(BATCH))
        )
        seq += BATCH
        with published.get_lock():
            published.value += BATCH
        await asyncio.sleep(0)


def _receiver(url: str, options: Options, local: bool, pipe: Connection, counts: _Counts) -> None:
    _pin(SERVER_CPUS)
    _run(_receive(url, options, local, pipe, counts))


async def _receive(
    url: str, options: Options, local: bool, pipe: Connection, counts: _Counts
) -> None:
    channels = Channels(listeners=[Plain], broker=url)
    async with channels:
        transports = [Discard() for _ in range(options.subscribers)]
        for n, transport in enumerate(transports):
            await subscribe(channels, await connection(channels, n, transport), CHANNEL)
        first = transports[0]

        async def count() -> None:
            while True:
                counts.received.value = first.frames
                await asyncio.sleep(0.002)

        tasks = [asyncio.create_task(count())]
        loop = asyncio.get_running_loop()
        pipe.send("ready")
        await loop.run_in_executor(None, pipe.recv)  # the publishers are ready
        if local:
            tasks.append(asyncio.create_task(_flood(channels, counts, options.window)))
        await asyncio.sleep(options.warmup)

        def sample() -> tuple[int, int, float, float]:
            deliveries = sum(t.frames for t in transports)
            return first.frames, deliveries, time.process_time(), time.perf_counter()

        before = sample()
        await asyncio.sleep(options.duration)
        after = sample()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        pipe.send([b - a for a, b in zip(before, after, strict=True)])


def _publisher(url: str, options: Options, pipe: Connection, counts: _Counts, stop: Event) -> None:
    _pin(LOAD_CPUS)
    _run(_publish(url, options, pipe, counts, stop))


async def _publish(
    url: str, options: Options, pipe: Connection, counts: _Counts, stop: Event
) -> None:
    channels = Channels(listeners=[Plain], broker=url)
    async with channels:
        pipe.send("ready")
        flood = asyncio.create_task(_flood(channels, counts, options.window))
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        flood.cancel()
        await asyncio.gather(flood, return_exceptions=True)


def measure(engine: str, url: str, options: Options) -> Result:
    """Run one engine's receiving process and its publishers; return what it took in."""
    context = multiprocessing.get_context("spawn")
    counts = _Counts(context.Value("q", 0), context.Value("q", 0))
    stop = context.Event()
    local = url.startswith("memory://")
    ours, theirs = context.Pipe()
    receiver = context.Process(
        target=_receiver, args=(url, options, local, theirs, counts), daemon=True
    )
    receiver.start()
    publishers: list[tuple[Any, Connection]] = []
    try:
        _expect(ours, receiver, "ready")
        for _ in range(0 if local else options.publishers):
            mine, its = context.Pipe()
            process = context.Process(
                target=_publisher,
                args=(url, options, its, counts, stop),
                daemon=True,
            )
            process.start()
            publishers.append((process, mine))
        for process, mine in publishers:
            _expect(mine, process, "ready")
        ours.send("go")
        window = options.warmup + options.duration + START_TIMEOUT
        broadcasts, deliveries, cpu, seconds = _expect(ours, receiver, None, window)
    finally:
        stop.set()
        for process in [receiver, *(p for p, _ in publishers)]:
            process.join(START_TIMEOUT)
            if process.is_alive():
                process.kill()
    return Result(
        engine=engine,
        url=url,
        subscribers=options.subscribers,
        publishers=1 if local else options.publishers,
        seconds=round(seconds, 3),
        broadcasts_per_s=round(broadcasts / seconds, 1),
        deliveries_per_s=round(deliveries / seconds, 1),
        cpu_us_per_delivery=round(cpu / deliveries * 1e6, 3) if deliveries else 0.0,
        cpu_percent=round(cpu / seconds * 100, 1),
    )


def _expect(pipe: Connection, process: Any, what: Any, timeout: float = START_TIMEOUT) -> Any:
    """The next message from ``process`` (``what`` if given), or an error if it died first."""
    if not pipe.poll(timeout):
        raise RuntimeError(f"no answer from a benchmark process within {timeout:.0f} s")
    try:
        message = pipe.recv()
    except EOFError:
        raise RuntimeError(f"a benchmark process died (exit code {process.exitcode})") from None
    if what is not None and message != what:
        raise RuntimeError(f"unexpected message {message!r}")
    return message


# ---------------------------------------------------------------------- servers


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def engine_url(engine: str) -> Iterator[str]:
    """The URL of a running server for ``engine``: the usual local one, else one started here.

    Raises:
        RuntimeError: neither answers nor can be started (no binary).
    """
    url = DEFAULTS[engine]
    parts = urlsplit(url)
    if engine == "memory" or _answers(parts.hostname or "", parts.port or 0):
        yield url
        return
    binary = shutil.which("redis-server" if engine == "redis" else "nats-server")
    if binary is None:
        raise RuntimeError(f"no {engine} server at {url}, and no binary to start one")
    port = _free_port()
    with tempfile.TemporaryDirectory() as directory:
        if engine == "redis":
            command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        else:
            command = [binary, "-a", "127.0.0.1", "-p", str(port)]
        process = subprocess.Popen(
            command, cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not _answers("127.0.0.1", port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the {engine} server started here did not answer")
                time.sleep(0.05)
            yield url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{port}")
        finally:
            process.terminate()
            process.wait(START_TIMEOUT)


def with_prefix(url: str, prefix: str) -> str:
    """``url`` with ``prefix`` as its ``prefix`` query parameter, unless it names one."""
    if url.startswith("memory://") or "prefix" in dict(parse_qsl(urlsplit(url).query)):
        return url
    return f"{url}{'&' if urlsplit(url).query else '?'}prefix={prefix}"


# ---------------------------------------------------------------------- report


def render(results: list[Result], skipped: dict[str, str]) -> str:
    """A table of the results, one row per engine, and the engines skipped."""
    lines = [
        f"{'engine':<14}{'subs':>6}{'pubs':>6}{'broadcasts/s':>14}{'deliveries/s':>14}"
        f"{'CPU µs/deliv':>14}{'CPU %':>8}"
    ]
    for r in results:
        lines.append(
            f"{r.engine:<14}{r.subscribers:>6}{r.publishers:>6}{r.broadcasts_per_s:>14,.0f}"
            f"{r.deliveries_per_s:>14,.0f}{r.cpu_us_per_delivery:>14.2f}{r.cpu_percent:>8.0f}"
        )
    lines += [f"{engine:<14}skipped: {why}" for engine, why in skipped.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure each engine asked for; print the table and the JSON; return the JSON's dict."""
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__)
    parser.add_argument("--engines", default="memory,redis,nats")
    parser.add_argument("--broker", action="append", default=[], help="any broker URL")
    parser.add_argument("--subscribers", type=int, default=Options.subscribers)
    parser.add_argument("--publishers", type=int, default=Options.publishers)
    parser.add_argument("--duration", type=float, default=Options.duration)
    parser.add_argument("--warmup", type=float, default=Options.warmup)
    parser.add_argument("--window", type=int, default=Options.window)
    parser.add_argument("--out", help="write the JSON here too")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    options = Options(args.subscribers, args.publishers, args.duration, args.warmup, args.window)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    results: list[Result] = []
    skipped: dict[str, str] = {}
    wanted = [(e, None) for e in args.engines.split(",") if e] + [
        (urlsplit(u).scheme, u) for u in args.broker
    ]
    for engine, given in wanted:
        try:
            with contextlib.ExitStack() as stack:
                url = given if given is not None else stack.enter_context(engine_url(engine))
                results.append(measure(engine, with_prefix(url, prefix), options))
        except (RuntimeError, KeyError) as exc:
            skipped[engine] = str(exc) or type(exc).__name__
        if not args.quiet and results and results[-1].engine == engine:
            print(render(results[-1:], {}).splitlines()[1], file=sys.stderr)
    report = {
        "options": asdict(options),
        "machine": machine(),
        "results": [asdict(r) for r in results],
        "skipped": skipped,
    }
    if not args.quiet:
        print(render(results, skipped))
        print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as out:
            json.dump(report, out, indent=2)
    return report


if __name__ == "__main__":
    main()
