"""NATS for the test suite: a shared server with JetStream, and private servers a test may restart.

The shared server (fixture ``nats_url``) is, in this order: ``NATS_URL`` if it is set;
127.0.0.1:4222 if a NATS server with JetStream answers there; a ``nats-server -js`` started for
the session on a free loopback port. Without any of them, tests that need NATS are skipped with
the reason, or fail when ``FASTAPI_CHANNELS_REQUIRE_NATS=1`` (as in CI).

Private servers (fixture ``nats_server``) always run a ``nats-server`` binary of their own, with
JetStream storing under a directory of their own, so a test may stop and restart them (the
stream survives, as on a real restart); the shared server is never touched.

Each test uses a subject prefix of its own (fixture ``nats_prefix``); the streams and the
presence bucket of that prefix are deleted when the test ends, so the shared server does not
fill up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.redis_support import ServerProcess

REQUIRE_ENV = "FASTAPI_CHANNELS_REQUIRE_NATS"
READY_LINE = b"Server is ready"
START_TIMEOUT = 10.0
CANDIDATES = ("/usr/sbin/nats-server", "/usr/local/bin/nats-server")


def nats_unavailable(reason: str) -> NoReturn:
    """Skip the current test for lack of NATS, or fail it when NATS is required."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"NATS is required ({REQUIRE_ENV}=1) but {reason}", pytrace=False)
    pytest.skip(f"needs NATS: {reason}")


def answers_with_jetstream(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a NATS server with JetStream answers at ``host:port`` (its ``INFO`` says so)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            line = sock.makefile("rb").readline(65536)
    except OSError:
        return False
    if not line.startswith(b"INFO "):
        return False
    try:
        info = json.loads(line[5:])
    except ValueError:
        return False
    return bool(info.get("jetstream"))


def nats_binary() -> str | None:
    """The ``nats-server`` binary on PATH or where Debian installs it, if any."""
    found = shutil.which("nats-server")
    if found is not None:
        return found
    return next((path for path in CANDIDATES if os.access(path, os.X_OK)), None)


class NatsServer(ServerProcess):
    """A private ``nats-server -js`` on 127.0.0.1, storing under a directory of its own.

    ``stop()`` then ``start()`` restarts it on the same port, with what it stored.
    """

    name = "nats-server"
    ready = READY_LINE

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self, port: int) -> list[str]:
        """The command line that starts the server on ``port``, JetStream on."""
        store = Path(self.dir) / "jetstream"
        return [self.binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)]


async def delete_stream(url: str, prefix: str, *, history: bool = True) -> None:
    """Delete the presence bucket of ``prefix`` on the server at ``url``, and (with
    ``history``) its history and idempotency streams, those there are."""
    import nats
    from nats.js.errors import NotFoundError

    from fastapi_channels.brokers._nats_subjects import Subjects

    subjects = Subjects(prefix)
    names = [subjects.presence_stream]
    if history:
        names += [subjects.stream, subjects.once_stream, subjects.quota_stream]
    client = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        for name in names:
            with contextlib.suppress(NotFoundError):
                await client.jetstream(timeout=5).delete_stream(name)
    finally:
        await client.close()


@pytest.fixture(scope="session")
def nats_server_binary() -> str:
    binary = nats_binary()
    if binary is None:
        nats_unavailable("no nats-server binary on PATH")
    return binary


@pytest.fixture(scope="session")
def _session_nats() -> Iterator[str | NatsServer | None]:
    """What the shared server is: a URL, a server started here, or nothing (``None``)."""
    url = os.environ.get("NATS_URL")
    if url:
        yield url
        return
    if answers_with_jetstream("127.0.0.1", 4222):
        yield "nats://127.0.0.1:4222"
        return
    binary = nats_binary()
    if binary is None:
        yield None
        return
    server = NatsServer(binary)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def nats_url(_session_nats: str | NatsServer | None) -> str:
    """The URL of the shared NATS server; skips (or fails, if required) without one."""
    if _session_nats is None:
        nats_unavailable(
            "NATS_URL is not set, no NATS server with JetStream answers on 127.0.0.1:4222, and "
            "there is no nats-server binary to start one"
        )
    if isinstance(_session_nats, NatsServer):
        return _session_nats.url
    return _session_nats


@pytest.fixture
def nats_prefix(nats_url: str) -> Iterator[str]:
    """A subject prefix of this test's own; its stream and bucket are deleted when the test ends.

    A plain fixture (an async one cannot be asked for by ``getfixturevalue`` in an async
    fixture): the deletion runs on an event loop of its own, in a thread.
    """
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield prefix
    errors: list[BaseException] = []

    def delete() -> None:
        try:
            asyncio.run(delete_stream(nats_url, prefix))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=delete)
    thread.start()
    thread.join(timeout=START_TIMEOUT)
    if errors:
        raise errors[0]


@pytest.fixture
def nats_server(nats_server_binary: str) -> Iterator[Callable[[], NatsServer]]:
    """A factory of private, started NATS servers, each stopped when the test ends."""
    servers: list[NatsServer] = []

    def start() -> NatsServer:
        server = NatsServer(nats_server_binary)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.close()
