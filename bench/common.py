"""What every benchmark server app shares: the payload, the JWT key, the loop-lag probe.

Each app exposes the same HTTP control routes, so the driver treats them alike:

- ``GET /bench/publish?rate=R&count=C&burst=B``: start publishing ``C`` broadcasts to the
  ``bench`` room in the background; ``rate=0`` publishes back to back (a flood), yielding to
  the loop after every ``B`` broadcasts.
- ``GET /bench/stats?reset=1``: the process's pid, RSS, how many sockets are in the room, the
  largest loop lag seen since the last reset, and whether the last publish run finished.

Apps that are not FastAPI apps get the same routes from `control_app` or `with_controls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psutil
from fastapi import FastAPI
from starlette.types import ASGIApp, Lifespan, Receive, Scope, Send

JWT_SECRET = "benchmark-secret-of-32-bytes-or-more"
JWT_ALGORITHM = "HS256"
ROOM = "bench"
EVENT = "tick"
PAD = "x" * 40
"""Padding that brings a packet to about 100 bytes of JSON."""

LAG_INTERVAL = 0.01


def payload(seq: int) -> dict[str, Any]:
    """The data of one broadcast: publish time (CLOCK_MONOTONIC, shared by all processes)."""
    return {"t": time.monotonic(), "s": seq, "p": PAD}


class LagProbe:
    """Measures how late the event loop runs a timer: the longest time it was blocked.

    It also times every cyclic garbage collection (``gc.callbacks``): a full collection walks
    every object of the process and blocks the loop for as long, whatever the app was doing.
    """

    def __init__(self) -> None:
        self.max_lag = 0.0
        self.max_gc = 0.0
        self._gc_start = 0.0
        self._task: asyncio.Task[None] | None = None
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.max_gc = max(self.max_gc, time.perf_counter() - self._gc_start)

    def reset(self) -> float:
        lag, self.max_lag = self.max_lag, 0.0
        return lag

    def reset_gc(self) -> float:
        pause, self.max_gc = self.max_gc, 0.0
        return pause

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(LAG_INTERVAL)
            lag = loop.time() - start - LAG_INTERVAL
            if lag > self.max_lag:
                self.max_lag = lag

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


class Publisher:
    """Runs one publish job at a time with a given ``broadcast(seq)`` coroutine function."""

    def __init__(self, broadcast: Callable[[int], Awaitable[None]]) -> None:
        self.broadcast = broadcast
        self.done = True
        self.published = 0
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, rate: float, count: int, burst: int) -> None:
        self.done = False
        self.published = 0
        self.error = None
        self._task = asyncio.get_running_loop().create_task(self._run(rate, count, burst))

    async def _run(self, rate: float, count: int, burst: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            start = loop.time()
            for seq in range(count):
                if rate > 0:
                    delay = start + seq / rate - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await self.broadcast(seq)
                self.published += 1
                if rate <= 0 and (seq + 1) % burst == 0:
                    await asyncio.sleep(0)
        except Exception as exc:  # reported through /bench/stats
            self.error = repr(exc)
        finally:
            self.done = True


class Bench:
    """The probe, the publisher and the stats of one server app."""

    def __init__(self, broadcast: Callable[[int], Awaitable[None]], count: Callable[[], int]):
        self.probe = LagProbe()
        self.publisher = Publisher(broadcast)
        self.count = count
        self.process = psutil.Process(os.getpid())

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self.probe.start()
        try:
            yield
        finally:
            self.probe.stop()

    def publish(self, rate: float, count: int, burst: int = 1) -> dict[str, Any]:
        self.publisher.start(rate, count, max(1, burst))
        return {"started": True}

    def stats(self, reset: bool = False) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "rss": self.process.memory_info().rss,
            "subscribers": self.count(),
            "lag_max": self.probe.reset() if reset else self.probe.max_lag,
            "gc_max": self.probe.reset_gc() if reset else self.probe.max_gc,
            "publish_done": self.publisher.done,
            "published": self.publisher.published,
            "publish_error": self.publisher.error,
        }


def add_routes(app: Any, bench: Bench) -> None:
    """Add the control routes to a FastAPI app."""

    @app.get("/bench/publish")
    async def publish(rate: float, count: int, burst: int = 1) -> dict[str, Any]:
        return bench.publish(rate, count, burst)

    @app.get("/bench/allocations")
    async def allocations() -> list[str]:
        """With PYTHONTRACEMALLOC set: the top allocation sites since the previous call."""
        import tracemalloc

        if not tracemalloc.is_tracing():
            return []
        snapshot = tracemalloc.take_snapshot()
        previous = getattr(bench, "snapshot", None)
        bench.snapshot = snapshot  # type: ignore[attr-defined]
        if previous is None:
            return []
        stats = snapshot.compare_to(previous, "lineno")
        total = sum(s.size_diff for s in stats)
        return [f"total {total / 1024:.0f} KiB", *(str(s) for s in stats[:80])]

    @app.get("/bench/stats")
    async def stats(reset: bool = False) -> dict[str, Any]:
        return bench.stats(reset)


def control_app(bench: Bench, lifespan: Lifespan[Any] | None = None) -> FastAPI:
    """The control routes as an app of their own, for a server that is not a FastAPI app."""
    app = FastAPI(lifespan=lifespan, openapi_url=None)
    add_routes(app, bench)
    return app


def with_controls(peer: ASGIApp, bench: Bench) -> ASGIApp:
    """``peer`` with the control routes in front of it.

    HTTP requests under ``/bench/`` go to the control routes; everything else (the websocket,
    the lifespan) goes to ``peer`` as it came, with the server's own ``send``: nothing is added
    to a delivery's path.
    """
    controls = control_app(bench)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/bench/"):
            await controls(scope, receive, send)
        else:
            await peer(scope, receive, send)

    return app


def redis_broker() -> tuple[str, str] | None:
    """The Redis URL and key prefix of a cross-process run, or None for an in-process one.

    The driver passes them as ``BENCH_BROKER=redis://host:port/db?prefix=P`` (fastapi_channels
    reads that URL as it is); each peer app hands the two parts to its own Redis settings.
    """
    url = os.environ.get("BENCH_BROKER")
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    prefix = urllib.parse.parse_qs(parts.query).get("prefix", ["bench"])[0]
    return urllib.parse.urlunsplit(parts._replace(query="")), prefix
