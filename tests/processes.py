"""Run an ASGI app in server subprocesses (uvicorn, or hypercorn or granian), each on its own
free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.redis_support import free_port

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0


class Process:
    """One uvicorn process serving ``app`` (``module:attribute``), on a free loopback port.

    ``env`` is added to this process's environment for the child. Its output is read line by
    line as it comes, so a test waits for what the process says (``wait_for``) instead of polling.
    """

    def __init__(
        self, app: str, env: Mapping[str, str], port: int = 0, server: str = "uvicorn"
    ) -> None:
        self.app = app
        self.server = server
        self.env = dict(env)
        self.port = port
        self._lines: list[str] = []
        self._ended = False
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        """The process id of the running child, if any."""
        return self._process.pid if self._process is not None else None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        """Start the process: on its port if it has one (a restart), else on a free one."""
        self.port = self.port or free_port()
        self._loop = asyncio.get_running_loop()
        # The project first; a PYTHONPATH already set (scripts/test-uvicorn-floor) stays after it.
        path = os.pathsep.join(filter(None, [".", os.environ.get("PYTHONPATH")]))
        env = {**os.environ, **self.env, "PYTHONPATH": path}
        args = [sys.executable, "-m", self.server, *_ARGS[self.server](self.app, self.port)]
        self._process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # A group of its own, signalled whole: a server's worker processes (granian's) hold
            # the output pipe too, and must not outlive it.
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """In a thread: collect the child's output until it exits, waking waiters each line."""
        assert self._process is not None and self._process.stdout is not None
        for raw in self._process.stdout:
            self._lines.append(raw.decode(errors="replace"))
            self._wake()
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the test's loop is already closed
            self._loop.call_soon_threadsafe(self._notify)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def exited(self) -> bool:
        return self._process is None or self._process.poll() is not None

    def output(self) -> str:
        return "".join(self._lines)

    def mark(self) -> int:
        """Where the output is now: ``wait_for(text, since=mark)`` looks only after it."""
        return len(self._lines)

    async def wait_for(self, text: str, since: int = 0) -> None:
        """Wait (bounded) until the process writes a line holding ``text`` after ``since``."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                changed = self._changed
                if any(text in line for line in self._lines[since:]):
                    return
                if self._ended:
                    raise RuntimeError(f"uvicorn exited:\n{self.output()}")
                await changed.wait()

    def kill(self) -> None:
        """End the process at once (SIGKILL): nothing of its shutdown runs."""
        if self._process is not None and self._process.poll() is None:
            self._signal(signal.SIGKILL)
            self._process.wait(timeout=TIMEOUT)

    def _signal(self, signum: int) -> None:
        """Send ``signum`` to the process's group: the server and any workers it started."""
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signum)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._process.wait(timeout=TIMEOUT)
        if self._process is not None:
            self._signal(signal.SIGKILL)  # workers the server left behind
        if self._reader is not None:
            self._reader.join(timeout=TIMEOUT)
        if self._process is not None and self._process.stdout is not None:
            self._process.stdout.close()

    async def health(self) -> dict[str, Any]:
        """The process's health report."""
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            response = await http.get(f"{self.http}/health")
        report: dict[str, Any] = response.json()
        return report

    async def wait_health(self, healthy: bool, since: int, server: str = "Redis") -> None:
        """Wait until the broker says, after ``since``, that it lost or regained its ``server``
        (``"Redis"``, ``"NATS"``); then check that the health route reports it."""
        await self.wait_for(f"{REGAINED} {server} at" if healthy else f"{LOST} {server}", since)
        assert (await self.health())["healthy"] is healthy

    async def post(self, path: str, json: Any = None) -> httpx.Response:
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            return await http.post(f"{self.http}{path}", json=json)


def _uvicorn(app: str, port: int) -> list[str]:
    args = [app, "--host", "127.0.0.1", "--port", str(port), "--ws", "websockets-sansio"]
    return [*args, "--log-level", "info", "--no-access-log"]


def _hypercorn(app: str, port: int) -> list[str]:
    return [app, "--bind", f"127.0.0.1:{port}"]


def _granian(app: str, port: int) -> list[str]:
    return [
        "--interface",
        "asgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        app,
    ]


_ARGS = {"uvicorn": _uvicorn, "hypercorn": _hypercorn, "granian": _granian}
"""The command line after ``python -m <server>`` for each server."""

LOST = "lost the connection to"
REGAINED = "connected to"
LISTENING = "Uvicorn running on"
"""What uvicorn logs once its socket listens; its "startup complete" comes before the bind."""


async def start_process(
    app: str,
    env: Mapping[str, str],
    *,
    port: int = 0,
    health: bool = True,
    server: str = "uvicorn",
    ready: Sequence[str] = (LISTENING,),
) -> Process:
    """Start a process, wait until it listens (after its lifespan, so its broker is connected)
    and check its ``/health`` (unless ``health`` is false: an app without that route); retry if
    its port was taken between choosing and binding it (unless ``port`` was given). A process
    that fails to start is stopped before the error is raised. Other servers than uvicorn say
    other things once ready: ``ready`` is what to wait for (every line of it, in any order)."""
    for _ in range(1 if port else 3):
        process = Process(app, env, port, server)
        process.spawn()
        try:
            try:
                for text in ready:
                    await process.wait_for(text)
            except RuntimeError:
                if "in use" in process.output().lower():
                    process.stop()
                    continue
                raise
            if health:
                assert (await process.health())["healthy"], process.output()
        except BaseException:
            process.stop()
            raise
        return process
    raise RuntimeError(f"no free port for {server} after 3 attempts")
