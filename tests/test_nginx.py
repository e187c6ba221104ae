"""The tutorial's app behind nginx, configured with the file the deployment page shows.

Two uvicorn processes of the private chat (``docs/examples/private/private_chat.py``) share
Redis; nginx runs in front of them with ``docs/deploy/nginx.conf`` (its ports changed to free
ones) included in a configuration of this test's own, with its pid, logs and temporary files in
a temporary directory. A client logs in through nginx, connects with its token, subscribes,
receives what each process sends, and comes back through nginx when the process that held its
socket restarts.

Without an ``nginx`` binary the tests are skipped with the reason, or fail when
``FASTAPI_CHANNELS_REQUIRE_NGINX=1`` (as in CI, whose ``.ci/run`` installs it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fastapi_channels.client import Backoff, ChannelsClient, Refused
from tests.processes import TIMEOUT, Process, start_process
from tests.redis_support import free_port

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "docs" / "deploy" / "nginx.conf"
APP = "docs.examples.private.private_chat:app"
REQUIRE_ENV = "FASTAPI_CHANNELS_REQUIRE_NGINX"
ACCEPTED = "[accepted]"
"""What uvicorn logs when it accepts a websocket (after its path and query string)."""
STARTED = "start worker process"
"""What nginx logs (at ``notice``) once its master listens and a worker is up."""


def nginx_binary() -> str:
    """The nginx binary; skips the test without one (fails if nginx is required)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        reason = "no nginx binary (apt-get install nginx)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"nginx is required ({REQUIRE_ENV}=1) but there is {reason}", pytrace=False)
        pytest.skip(f"needs nginx: {reason}")
    return found


def render(port: int, upstreams: list[int]) -> str:
    """The deployment page's server block, listening on ``port``, in front of ``upstreams``."""
    text = CONFIG.read_text()
    changes = {
        "listen 8000;": f"listen 127.0.0.1:{port};",
        "server 127.0.0.1:8001;": f"server 127.0.0.1:{upstreams[0]};",
        "server 127.0.0.1:8002;": f"server 127.0.0.1:{upstreams[1]};",
    }
    for old, new in changes.items():
        assert text.count(old) == 1, f"{CONFIG.name} should hold {old!r} once"
        text = text.replace(old, new)
    return text


class Nginx:
    """nginx in the foreground on a free loopback port, every file in a temporary directory."""

    def __init__(self, binary: str, upstreams: list[int]) -> None:
        self.binary = binary
        self.upstreams = upstreams
        self.port = 0
        self.output: list[str] = []
        self._dir = tempfile.TemporaryDirectory(prefix="fastapi-channels-nginx-")
        self._process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for _ in range(3):
            self.port = free_port()
            if await self._spawn():
                return
        raise RuntimeError("no free port for nginx after 3 attempts")

    async def _spawn(self) -> bool:
        """Start nginx and wait until it says it is up; ``False`` if its port got taken."""
        directory = Path(self._dir.name)
        (directory / "channels.conf").write_text(render(self.port, self.upstreams))
        # Run as root, nginx would switch its workers to "nobody", who cannot use this directory.
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "\n".join(
            f"    {kind}_temp_path {directory / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (directory / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {directory / 'nginx.pid'};\n"
            "error_log stderr notice;\nevents {\n    worker_connections 256;\n}\n"
            f"http {{\n    access_log {directory / 'access.log'};\n{temp}\n"
            f"    include {directory / 'channels.conf'};\n}}\n"
        )
        process = await asyncio.create_subprocess_exec(
            self.binary,
            "-p",
            str(directory),
            "-c",
            str(directory / "nginx.conf"),
            "-e",
            "stderr",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stderr is not None
        try:
            async with asyncio.timeout(TIMEOUT):
                while line := (await process.stderr.readline()).decode(errors="replace"):
                    self.output.append(line)
                    if STARTED in line:
                        break
        except BaseException:
            await self._end(process)
            raise
        if not any(STARTED in line for line in self.output):
            await self._end(process)
            if any("Address already in use" in line for line in self.output):
                return False
            raise RuntimeError("nginx did not start:\n" + "".join(self.output))
        self._process = process
        self._drain = asyncio.ensure_future(self._keep_reading(process))
        return True

    async def _keep_reading(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        while line := await process.stderr.readline():
            self.output.append(line.decode(errors="replace"))

    async def _end(self, process: asyncio.subprocess.Process) -> None:
        if process.returncode is None:
            process.terminate()  # nginx's fast shutdown
        async with asyncio.timeout(TIMEOUT):
            await process.communicate()

    def access_log(self) -> str:
        return (Path(self._dir.name) / "access.log").read_text()

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.returncode is None:
                process.terminate()
            async with asyncio.timeout(TIMEOUT):
                await process.wait()
        if self._drain is not None:
            async with asyncio.timeout(TIMEOUT):
                await self._drain
        self._dir.cleanup()


@dataclass
class Deployment:
    processes: list[Process]
    env: dict[str, str]
    nginx: Nginx

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.nginx.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.nginx.port}/ws"

    async def restart(self, index: int) -> None:
        """Stop a process (SIGTERM: our clients' sockets are closed with 1012 and advised when
        to come back), start it on its port. The test's loop keeps running meanwhile, so its
        clients answer the close."""
        old = self.processes[index]
        await asyncio.to_thread(old.stop)
        self.processes[index] = await start_process(APP, self.env, port=old.port, health=False)


@pytest.fixture
async def deployment(redis_url: str) -> AsyncIterator[Deployment]:
    binary = nginx_binary()
    env = {
        "CHAT_JWT_SECRET": uuid.uuid4().hex * 2,
        "FASTAPI_CHANNELS_BROKER_URL": f"{redis_url}?prefix=test-{uuid.uuid4().hex[:12]}",
    }
    processes = list(
        await asyncio.gather(*(start_process(APP, env, health=False) for _ in range(2)))
    )
    nginx = Nginx(binary, [process.port for process in processes])
    try:
        await nginx.start()
        yield Deployment(processes, env, nginx)
    finally:
        await nginx.stop()
        for process in processes:
            process.stop()


async def login(http: httpx.AsyncClient, base: str, username: str, password: str) -> str:
    response = await http.post(f"{base}/login", json={"username": username, "password": password})
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


async def say(http: httpx.AsyncClient, base: str, token: str, text: str) -> None:
    """Bob posts to his conversation with Ann over HTTP, through ``base``."""
    response = await http.post(
        f"{base}/conversations/ann/messages",
        json={"text": text},
        headers={"Authorization": f"Bearer {token}"},
    )
    response.raise_for_status()


async def next_message(stream: Any, timeout: float = TIMEOUT) -> Any:
    async with asyncio.timeout(timeout):
        async for packet in stream:
            return packet.data
    raise AssertionError("the stream ended")


async def holder(processes: list[Process], marks: list[int]) -> int:
    """The index of the process that logs accepting a websocket after its mark."""
    waits = [
        asyncio.ensure_future(process.wait_for(ACCEPTED, since=mark))
        for process, mark in zip(processes, marks, strict=True)
    ]
    try:
        done, _ = await asyncio.wait(waits, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    assert done, "no process accepted the websocket"
    return waits.index(done.pop())


async def test_through_nginx_from_both_processes_and_across_a_restart(
    deployment: Deployment,
) -> None:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:

        async def ann_token() -> str:  # asked again on every reconnect, as a page would
            return await login(http, deployment.http, "ann", "correct horse")

        bob = await login(http, deployment.http, "bob", "battery staple")
        processes = deployment.processes
        marks = [process.mark() for process in processes]
        client = ChannelsClient(deployment.ws, token=ann_token, reconnect=Backoff(initial=0.2))
        async with client:
            held = await holder(processes, marks)
            messages = client.packets("message", channel="dm:ann.bob")
            await client.subscribe("dm:ann.bob", timeout=TIMEOUT)
            resubscribed = client.packets("channels:subscription")

            # What each process sends reaches the socket that nginx gave to one of them.
            for process in processes:
                await say(http, process.http, bob, f"from {process.port}")
                assert await next_message(messages) == {
                    "author": "bob",
                    "text": f"from {process.port}",
                }
            await say(http, deployment.http, bob, "through nginx")
            assert (await next_message(messages))["text"] == "through nginx"

            # The process holding the socket restarts: the client comes back through nginx.
            marks = [process.mark() for process in processes]
            await deployment.restart(held)
            other = 1 - held
            # The client waits the advised delay first: up to the app's reconnect_spread (10 s).
            again = await next_message(resubscribed, timeout=TIMEOUT + 11)
            await processes[other].wait_for(ACCEPTED, since=marks[other])
            assert (again["channel"], again["successful"], again["resubscribed"]) == (
                "dm:ann.bob",
                True,
                True,
            )

            for process in deployment.processes:  # the restarted one included
                await say(http, process.http, bob, f"again from {process.port}")
                assert (await next_message(messages))["text"] == f"again from {process.port}"
            messages.close()
            resubscribed.close()

    # Both sockets went through nginx: the one the restart closed, and the one after it.
    upgrades = [
        line
        for line in deployment.nginx.access_log().splitlines()
        if '"GET /ws?' in line and 'HTTP/1.1" 101' in line
    ]
    assert len(upgrades) == 2


async def test_a_bad_token_is_refused_through_nginx(deployment: Deployment) -> None:
    client = ChannelsClient(deployment.ws, token="not-a-token", reconnect=False)
    with pytest.raises(Refused, match=r"authentication failed|invalid token|unauthorised"):
        await client.connect()
    await client.close()
