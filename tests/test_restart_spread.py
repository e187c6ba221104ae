"""A restart under uvicorn (SIGTERM): clients come back spread over the advised window.

Process A serves the clients through a loopback proxy; when A gets SIGTERM the proxy sends new
connections to process B, already running, so a reconnection succeeds the moment it is tried
and its time is the client's own decision. Each test measures when clients were back.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from fastapi_channels.client import Backoff, ChannelsClient, ClientState
from tests.processes import TIMEOUT, Process, start_process
from tests.proxy import TcpProxy

APP = "tests.multiprocess_app:app"
SPREAD = 3.0
"""Seconds over which a restart spreads the reconnections (``Limits.reconnect_spread``)."""


@pytest.fixture
async def two_processes() -> AsyncIterator[tuple[Process, Process, TcpProxy]]:
    env = {"RECONNECT_SPREAD": str(SPREAD)}  # the memory broker: one process each
    a, b = await asyncio.gather(*(start_process(APP, env) for _ in range(2)))
    proxy = TcpProxy(a.port)
    await proxy.start()
    try:
        yield a, b, proxy
    finally:
        await proxy.stop()
        for process in (a, b):
            process.stop()


def terminate(process: Process, proxy: TcpProxy, to: Process) -> float:
    """SIGTERM ``process`` (without waiting) and send new connections to ``to``; the time."""
    proxy.target_port = to.port
    assert process._process is not None
    process._process.terminate()
    return asyncio.get_running_loop().time()


def most_in_one_second(times: list[float]) -> int:
    ordered = sorted(times)
    return max(sum(1 for t in ordered[i:] if t < start + 1.0) for i, start in enumerate(ordered))


async def test_200_of_our_clients_come_back_spread_over_the_advised_window(
    two_processes: tuple[Process, Process, TcpProxy],
) -> None:
    a, b, proxy = two_processes
    url = f"ws://127.0.0.1:{proxy.port}/ws"
    clients = [ChannelsClient(url, reconnect=Backoff(initial=0.05)) for _ in range(200)]
    loop = asyncio.get_running_loop()
    back: dict[int, float] = {}
    advice: dict[int, float] = {}
    everyone_back = asyncio.Event()

    def watch(n: int, c: ChannelsClient) -> None:
        def on_state(packet: Any) -> None:
            if packet.data["state"] == "connected" and packet.data["previous"] == "re-connecting":
                back[n] = loop.time()
                if len(back) == len(clients):
                    everyone_back.set()

        c.on("channels:state", on_state)
        c.on("disconnect", lambda packet: advice.__setitem__(n, packet.data["reconnect_after"]))

    for n, c in enumerate(clients):
        watch(n, c)
    try:
        await asyncio.gather(*(c.connect() for c in clients))
        started = terminate(a, proxy, b)
        async with asyncio.timeout(SPREAD * 1.1 + TIMEOUT):
            await everyone_back.wait()
        assert all(c.state is ClientState.CONNECTED for c in clients)
        delays = [back[n] - started for n in range(len(clients))]
        # Nobody came back before the delay advised to it; together they span the window.
        assert all(delays[n] >= advice[n] - 0.05 for n in range(len(clients)))
        assert max(delays) - min(delays) >= SPREAD * 0.6
        # The advice is uniform over the window (about a third of the clients per second), so
        # no second gets more than its share of attempts. The times clients were back are not
        # checked for this: on a busy machine the handshakes themselves queue up and bunch.
        assert most_in_one_second(list(advice.values())) <= len(clients) * 0.6
        print(
            f"reconnects spread over {max(delays) - min(delays):.2f}s, at most "
            f"{most_in_one_second(delays)} of {len(clients)} back in one second"
        )
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def envuso_like(
    url: str,
    subscribed: asyncio.Queue[None],
    back: asyncio.Queue[tuple[float, bool]],
    stop: asyncio.Event,
) -> None:
    """A client that behaves as Envuso's: it reconnects (and subscribes again) only after a
    connection ended without a close frame, and gives up after any close frame."""
    loop = asyncio.get_running_loop()
    subscribe = {"event": "subscribe-channel-request", "data": {"channel": "room:e"}}
    for attempt in range(2):
        async with websockets.connect(url) as ws:
            assert json.loads(await ws.recv())["event"] == "ready"
            await ws.send(json.dumps(subscribe))
            assert json.loads(await ws.recv())["data"]["successful"] is True
            await subscribed.put(None)
            if attempt == 1:
                await back.put((loop.time(), True))
                await stop.wait()
                return
            try:
                while True:
                    await ws.recv()
            except websockets.ConnectionClosed as exc:
                clean = exc.rcvd is not None
            if clean:  # a close frame: Envuso's client gives up
                await back.put((loop.time(), False))
                return


async def test_envuso_clients_are_dropped_without_a_close_frame_spread_and_come_back(
    two_processes: tuple[Process, Process, TcpProxy],
) -> None:
    a, b, proxy = two_processes
    url = f"ws://127.0.0.1:{proxy.port}/ws"
    count = 40
    subscribed: asyncio.Queue[None] = asyncio.Queue()
    back: asyncio.Queue[tuple[float, bool]] = asyncio.Queue()
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(envuso_like(url, subscribed, back, stop)) for _ in range(count)]
    ours = ChannelsClient(url, reconnect=Backoff(initial=0.05))
    try:
        await ours.connect()
        disconnects = ours.packets("disconnect")
        async with asyncio.timeout(TIMEOUT):
            for _ in range(count):
                await subscribed.get()
        started = terminate(a, proxy, b)
        times = []
        async with asyncio.timeout(SPREAD + TIMEOUT):
            for _ in range(count):
                at, resubscribed = await back.get()
                assert resubscribed, "an Envuso-like client got a close frame and gave up"
                times.append(at - started)
        # They were dropped at random moments of the window, not all at once.
        assert max(times) - min(times) >= SPREAD * 0.5
        print(f"Envuso-like clients back over {max(times) - min(times):.2f}s")
        # Ours, meanwhile, got a close 1012 with the advice.
        assert "reconnect_after" in (await disconnects.get(timeout=TIMEOUT)).data
        disconnects.close()
    finally:
        stop.set()
        failures = [r for r in await asyncio.gather(*tasks, return_exceptions=True) if r]
        assert failures == []
        await ours.close()
