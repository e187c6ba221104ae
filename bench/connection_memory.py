"""What an idle subscribed connection holds on the Python heap, by file, measured by tracemalloc.

``python -m bench.connection_memory [--count N] [--servers a,b]``: each server app of
`bench.apps.connect_apps` runs under uvicorn (the settings of `bench.serve`) with tracemalloc
on. One client opens 20 connections to warm up, the server snapshots its heap, the client opens
``N`` more (each: handshake, ``ready``, a subscribe request and its answer; all kept open and
idle), a collection runs and the server snapshots again. The difference, divided by ``N``, is
what one more idle subscribed connection keeps: in all, and by the file that allocated it.
Exact and repeatable (it counts Python allocations, not pages); it leaves out what is not
allocated through Python's allocators (the kernel's socket buffers, libuv's handles).

``python -m bench.connection_memory --serve MODULE:APP FD OUT`` is the server side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import pickle
import signal
import socket
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

from bench.connect_cost import SERVERS, WARM_UP, _open

_FRAMES = 12


def _serve(app: str, fd: int, out: str) -> None:
    """Run the app with tracemalloc; each SIGUSR1 writes a snapshot's statistics to ``out``."""
    tracemalloc.start(_FRAMES)
    taken = [0]

    def snapshot(*_: Any) -> None:
        gc.collect()
        stats = tracemalloc.take_snapshot().statistics("traceback")
        rows = [(s.size, s.count, [(f.filename, f.lineno) for f in s.traceback]) for s in stats]
        Path(f"{out}.{taken[0]}").write_bytes(pickle.dumps(rows))
        taken[0] += 1
        os.kill(os.getppid(), signal.SIGUSR2)  # written: the driver may read it

    signal.signal(signal.SIGUSR1, snapshot)
    sys.argv = ["bench.serve", app, str(fd)]
    from bench.serve import main

    with contextlib.suppress(KeyboardInterrupt):  # how the driver stops it
        main()


async def _measure(name: str, count: int, out: Path) -> tuple[list[Any], list[Any]]:
    app, path, jwt = SERVERS[name]
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    port = listener.getsockname()[1]
    base = out / name
    command = [sys.executable, "-m", "bench.connection_memory", "--serve", app]
    server = subprocess.Popen(  # noqa: ASYNC220 (started before any client)
        [*command, str(listener.fileno()), str(base)],
        pass_fds=[listener.fileno()],
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    listener.close()
    url = f"ws://127.0.0.1:{port}{path}"
    sockets = []
    written = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, written.set)
    try:
        for index in range(WARM_UP):
            sockets.append(await _open(url, index, jwt))
        for taken in range(2):
            if taken:
                for index in range(WARM_UP, WARM_UP + count):
                    sockets.append(await _open(url, index, jwt))
            written.clear()
            server.send_signal(signal.SIGUSR1)
            async with asyncio.timeout(60):
                await written.wait()
    finally:
        for ws in sockets:
            await ws.close()
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    before, after = (pickle.loads(Path(f"{base}.{n}").read_bytes()) for n in range(2))  # noqa: ASYNC240
    return before, after


def _by_file(rows: list[Any]) -> dict[str, int]:
    """Bytes by the innermost file of the allocation's traceback that is not the stdlib's."""
    totals: dict[str, int] = {}
    for size, _, frames in rows:
        key = _owner(frames)
        totals[key] = totals.get(key, 0) + size
    return totals


def _owner(frames: list[tuple[str, int]]) -> str:
    """The allocation's owner: our package, uvicorn, websockets, Starlette, FastAPI, ..."""
    for filename, _ in reversed(frames):  # innermost last in tracemalloc's order: walk it
        for marker in ("fastapi_channels", "uvicorn", "websockets", "starlette", "fastapi"):
            if f"/{marker}/" in filename:
                return f"{marker}/{filename.split(f'/{marker}/', 1)[1]}"
        if "/bench/" in filename:
            return "bench/" + filename.split("/bench/", 1)[1]
    return f"other: {frames[-1][0].rsplit('/', 1)[-1]}" if frames else "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--serve", nargs=3, metavar=("APP", "FD", "OUT"))
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve[0], int(args.serve[1]), args.serve[2])
        return
    out = Path(f"/tmp/fastapi-channels-memory-{os.getpid()}")
    out.mkdir(exist_ok=True)
    for name in args.servers.split(","):
        before, after = asyncio.run(_measure(name, args.count, out))
        old, new = _by_file(before), _by_file(after)
        growth = {k: (new.get(k, 0) - old.get(k, 0)) / args.count for k in {*old, *new}}
        total = sum(growth.values())
        print(f"{name}: {total:,.0f} bytes per idle subscribed connection")
        for key, size in sorted(growth.items(), key=lambda kv: -abs(kv[1]))[: args.top]:
            print(f"  {size:8,.0f}  {key}")


if __name__ == "__main__":
    main()
