"""Run an ASGI app in uvicorn subprocesses, each on its own free loopback port."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import httpx

from tests.redis_support import free_port

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0


class Process:
    """One uvicorn process serving ``app`` (``module:attribute``), on a free loopback port.

    ``env`` is added to this process's environment for the child.
    """

    def __init__(self, app: str, env: Mapping[str, str]) -> None:
        self.app = app
        self.env = dict(env)
        self.port = 0
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        self.port = free_port()
        env = {**os.environ, **self.env, "PYTHONPATH": "."}
        args = [sys.executable, "-m", "uvicorn", self.app]
        args += ["--host", "127.0.0.1", "--port", str(self.port), "--ws", "websockets-sansio"]
        args += ["--log-level", "warning"]
        self._process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log
        )

    def exited(self) -> bool:
        return self._process is None or self._process.poll() is not None

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def kill(self) -> None:
        """End the process at once (SIGKILL): nothing of its shutdown runs."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=TIMEOUT)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=TIMEOUT)
        self.log.close()

    async def health(self) -> dict[str, Any] | None:
        """The process's health report, or ``None`` while it does not answer."""
        try:
            async with httpx.AsyncClient(timeout=1.0) as http:
                response = await http.get(f"{self.http}/health")
        except httpx.TransportError:
            return None
        report: dict[str, Any] = response.json()
        return report

    async def wait_health(self, healthy: bool) -> None:
        """Poll the health route (bounded) until the process reports ``healthy``."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                if self.exited():
                    raise RuntimeError(f"uvicorn exited:\n{self.output()}")
                report = await self.health()
                if report is not None and report["healthy"] is healthy:
                    return
                await asyncio.sleep(0.05)

    async def post(self, path: str, json: Any = None) -> httpx.Response:
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            return await http.post(f"{self.http}{path}", json=json)


async def start_process(app: str, env: Mapping[str, str]) -> Process:
    """Start a process and wait until its ``/health`` route reports a connected broker; retry if
    its port was taken between choosing and binding it."""
    for _ in range(3):
        process = Process(app, env)
        process.spawn()
        try:
            await process.wait_health(True)
        except RuntimeError:
            if "address already in use" not in process.output().lower():
                raise
            process.stop()
            continue
        return process
    raise RuntimeError("no free port for uvicorn after 3 attempts")
