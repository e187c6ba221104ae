"""Instructions per connect (+ ``ready`` + one subscribe), counted by callgrind in the server.

``python -m bench.connect_cost [--count K] [--servers a,b]``: each server app of
`bench.apps.connect_apps` runs under uvicorn (the settings of `bench.serve`) inside
``valgrind --tool=callgrind``. One client opens 20 connections to warm the paths up, the
counters are zeroed, it opens ``K`` more one after the other (each: handshake, ``ready``, a
subscribe request and its answer; all kept open), and the counters are dumped. The figure is
the server's instructions in that window divided by ``K``: repeatable to a fraction of a percent
whatever else the machine runs, unlike a connection rate. Needs valgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from bench.common import ROOM
from bench.load import token

SERVERS = {
    "channels": ("bench.apps.connect_apps:channels_anonymous", "/ws", False),
    "handwritten": ("bench.apps.connect_apps:handwritten", "/ws", False),
    "channels-jwt": ("bench.apps.connect_apps:channels_jwt", "/ws", True),
    "handwritten-jwt": ("bench.apps.connect_apps:handwritten", "/ws-jwt", True),
}
WARM_UP = 20


async def _open(url: str, index: int, jwt: bool) -> ClientConnection:
    protocols: Any = [token(index)] if jwt else None
    ws = await connect(url, subprotocols=protocols, compression=None, open_timeout=120)
    ready = json.loads(await asyncio.wait_for(ws.recv(), 120))
    assert ready["event"] == "ready", ready
    await ws.send(json.dumps({"event": "subscribe-channel-request", "data": {"channel": ROOM}}))
    answer = json.loads(await asyncio.wait_for(ws.recv(), 120))
    assert answer["event"] == "subscribe-channel-response", answer
    return ws


def _control(option: str, pid: int) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], check=True, capture_output=True)


async def _measure(name: str, count: int, out: Path) -> int:
    app, path, jwt = SERVERS[name]
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    port = listener.getsockname()[1]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    server = subprocess.Popen(  # noqa: ASYNC220 (started before any client)
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}/{name}.%p",
            sys.executable,
            "-m",
            "bench.serve",
            app,
            str(listener.fileno()),
        ],
        pass_fds=[listener.fileno()],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    listener.close()
    url = f"ws://127.0.0.1:{port}{path}"
    sockets: list[ClientConnection] = []
    try:
        for index in range(WARM_UP):
            sockets.append(await _open(url, index, jwt))
        _control("-z", server.pid)
        for index in range(WARM_UP, WARM_UP + count):
            sockets.append(await _open(url, index, jwt))
        _control("-d", server.pid)
    finally:
        for ws in sockets:
            await ws.close()
        server.send_signal(signal.SIGINT)
        server.wait(timeout=120)
    totals = 0
    for dump in out.glob(f"{name}.{server.pid}.*"):  # noqa: ASYNC240 (all clients done)
        match = re.search(rb"^totals: (\d+)", dump.read_bytes(), re.MULTILINE)
        if match:
            totals = max(totals, int(match.group(1)))
    return totals // count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--keep", help="a directory to keep callgrind's files in")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep or tmp)
        out.mkdir(parents=True, exist_ok=True)
        for name in args.servers.split(","):
            per = asyncio.run(_measure(name, args.count, out))
            print(f"{name:16} {per:>12,} instructions per connect+subscribe", flush=True)


if __name__ == "__main__":
    main()
