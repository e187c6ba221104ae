"""Websocket clients and HTTP publishers on one host of the several-hosts test.

Run inside a host's network namespace (``ip netns exec <ns> python -m tests.hosts_agent``), it
reads commands from stdin, one JSON object a line, and writes what happens to stdout, one JSON
object a line, each with ``t``, this machine's monotonic clock when it happened:

- ``{"op": "connect", "client": NAME, "url": WS_URL, "subscribe": [CHANNEL, ...]}`` opens a
  websocket, sends a subscribe request for each channel, and reports every packet it receives
  (``{"client": NAME, "packet": ...}``), then its end (``{"client": NAME, "closed": CODE}``);
- ``{"op": "publish", "publisher": NAME, "url": HTTP_URL, "count": N, "interval": SECONDS}``
  POSTs ``{"from": NAME, "n": n}`` to the URL, one at a time, ``n`` counting on from the
  publisher's previous run; each answer is reported (``{"publisher": NAME, "n": n, "status":
  CODE}``), and the run's end (``{"publisher": NAME, "stopped": NEXT_N}``) after ``count``
  posts or a ``stop``. ``interval`` paces a steady stream of traffic: it is the load's rate,
  not a wait for anything;
- ``{"op": "stop", "publisher": NAME}`` ends that publisher's run after its current post.

At the end of stdin it closes its websockets and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

import httpx
import websockets

HTTP_TIMEOUT = 15.0  # longer than the broker's own timeout (5 s), which answers first


class Agent:
    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self.sockets: list[websockets.ClientConnection] = []
        self.next_n: dict[str, int] = {}
        self.stopping: dict[str, asyncio.Event] = {}
        self.http = httpx.AsyncClient(timeout=HTTP_TIMEOUT)

    def report(self, **fields: Any) -> None:
        sys.stdout.write(json.dumps({"t": time.monotonic(), **fields}) + "\n")
        sys.stdout.flush()

    def start(self, command: dict[str, Any]) -> None:
        if command["op"] == "stop":
            self.stopping[command["publisher"]].set()
            return
        work = self.connect(command) if command["op"] == "connect" else self.publish(command)
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.done)

    def done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.report(failed=repr(task.exception()))

    async def connect(self, command: dict[str, Any]) -> None:
        name = command["client"]
        async with websockets.connect(command["url"]) as ws:
            self.sockets.append(ws)
            for channel in command["subscribe"]:
                request = {"event": "subscribe-channel-request", "data": {"channel": channel}}
                await ws.send(json.dumps(request))
            with contextlib.suppress(websockets.ConnectionClosed):
                async for frame in ws:
                    self.report(client=name, packet=json.loads(frame))
        self.report(client=name, closed=ws.close_code)

    async def publish(self, command: dict[str, Any]) -> None:
        name = command["publisher"]
        stop = self.stopping[name] = asyncio.Event()
        n = self.next_n.get(name, 0)
        for _ in range(command["count"]):
            if stop.is_set():
                break
            try:
                response = await self.http.post(command["url"], json={"from": name, "n": n})
                status = response.status_code
            except httpx.HTTPError as exc:
                status = repr(exc)
            self.report(publisher=name, n=n, status=status)
            n += 1
            if command["interval"]:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), command["interval"])
        self.next_n[name] = n
        self.report(publisher=name, stopped=n)

    async def close(self) -> None:
        for event in self.stopping.values():
            event.set()
        for ws in self.sockets:
            await ws.close()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=HTTP_TIMEOUT)
        await self.http.aclose()


async def main() -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    agent = Agent()
    agent.report(agent="ready")
    try:
        while line := await stdin.readline():
            agent.start(json.loads(line))
    finally:
        await agent.close()


if __name__ == "__main__":
    asyncio.run(main())
