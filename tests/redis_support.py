"""Redis for the test suite: a shared server, and private servers a test may stop and restart.

The shared server (fixture ``redis_url``) is, in this order: ``REDIS_URL`` if it is set;
127.0.0.1:6379 if it answers ``PING``; a ``redis-server`` started for the session on a free
loopback port. Without any of them, tests that need Redis are skipped with the reason, or fail
when ``FASTAPI_CHANNELS_REQUIRE_REDIS=1`` (as in CI).

Private servers (fixture ``redis_server``) always run a ``redis-server`` binary of their own, so a
test may stop, freeze or restart them; the shared server is never touched.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import NoReturn

import pytest

REQUIRE_ENV = "FASTAPI_CHANNELS_REQUIRE_REDIS"
READY_LINE = b"Ready to accept connections"
START_TIMEOUT = 10.0


def redis_unavailable(reason: str) -> NoReturn:
    """Skip the current test for lack of Redis, or fail it when Redis is required."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"Redis is required ({REQUIRE_ENV}=1) but {reason}", pytrace=False)
    pytest.skip(f"needs Redis: {reason}")


def answers_ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis server answers ``PING`` at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def free_port() -> int:
    """A loopback port that was free a moment ago (callers retry if it got taken since)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """A private server binary on 127.0.0.1, started and stopped by a test.

    Subclasses say how to start it (`command`), what it prints once it serves clients
    (`ready`) and its URL. ``stop()`` then ``start()`` restarts it on the same port;
    ``pause()`` freezes it (connections stay open, nothing is answered).
    """

    name = "server"
    """The binary's name, for error messages."""
    ready: bytes = READY_LINE
    """What the server prints once it serves clients."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = 0
        self.output: list[bytes] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._drain_thread: threading.Thread | None = None
        self._dir = tempfile.TemporaryDirectory(prefix=f"fastapi-channels-{self.name}-")

    @property
    def url(self) -> str:
        raise NotImplementedError

    def command(self, port: int) -> list[str]:
        """The command line that starts the server on ``port``."""
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def dir(self) -> str:
        """The server's working directory (its files), removed by `close`."""
        return self._dir.name

    def start(self) -> None:
        """Start the server: on a new free port the first time, on the same port after that."""
        assert not self.running, "already running"
        if self.port:
            self._spawn(self.port)
            return
        for _ in range(5):
            port = free_port()
            try:
                self._spawn(port)
            except PortTaken:
                continue
            self.port = port
            return
        raise RuntimeError(f"no free port for {self.name} after 5 attempts")

    def stop(self) -> None:
        """Shut the server down (SIGTERM: it closes every client connection) and wait for it."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused server could not take the SIGTERM
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._drain_thread is not None:  # it ends at EOF, now that the server has exited
            self._drain_thread.join(timeout=10)
            self._drain_thread = None
        if process.stdout is not None:
            process.stdout.close()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): it keeps its sockets open and answers nothing."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze a paused server."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def _spawn(self, port: int) -> None:
        process = subprocess.Popen(
            self.command(port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        assert process.stdout is not None
        try:
            output = _read_until_ready(
                process.stdout.fileno(), time.monotonic() + START_TIMEOUT, self.ready, self.name
            )
        except BaseException:
            _discard(process)
            raise
        self.output.append(output)
        if self.ready not in output:
            _discard(process)
            text = output.decode(errors="replace")
            if "address already in use" in text.lower():
                raise PortTaken(port)
            raise RuntimeError(f"{self.name} did not start on port {port}:\n{text}")
        self._process = process
        # Keep draining its output so the pipe never fills and blocks the server.
        self._drain_thread = threading.Thread(target=self._drain, args=(process,), daemon=True)
        self._drain_thread.start()

    def _drain(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        fd = process.stdout.fileno()
        try:
            while chunk := os.read(fd, 65536):
                self.output.append(chunk)
        except OSError:
            return


class RedisServer(ServerProcess):
    """A private ``redis-server`` on 127.0.0.1 without persistence.

    ``stop()`` then ``start()`` restarts it on the same port, empty, as a real Redis restart
    would leave it.
    """

    name = "redis-server"

    def __init__(self, binary: str, *options: str) -> None:
        super().__init__(binary)
        self.options = list(options)
        """More ``redis-server`` options (``--replicaof ...``, ``--cluster-enabled yes``)."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, port: int) -> list[str]:
        """The command line that starts the server on ``port``, with `options`."""
        args = [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", self._dir.name, "--daemonize", "no"]
        return [*args, *self.options]


class PortTaken(Exception):
    """The port was taken between choosing it and binding it."""


def _read_until_ready(fd: int, deadline: float, ready: bytes, name: str) -> bytes:
    """Read the server's output until it is ready or exits; fail after ``deadline``."""
    output = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while ready not in output:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise RuntimeError(f"{name} did not become ready in time")
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            output += chunk
    return output


def _discard(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture(scope="session")
def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        redis_unavailable("no redis-server binary on PATH")
    return binary


@pytest.fixture(scope="session")
def _session_redis() -> Iterator[str | RedisServer | None]:
    """What the shared server is: a URL, a server started here, or nothing (``None``)."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    if answers_ping("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
        return
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    server = RedisServer(binary)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(_session_redis: str | RedisServer | None) -> str:
    """The URL of the shared Redis server; skips (or fails, if required) without one."""
    if _session_redis is None:
        redis_unavailable(
            "REDIS_URL is not set, nothing answers on 127.0.0.1:6379, and there is no "
            "redis-server binary on PATH to start one"
        )
    if isinstance(_session_redis, RedisServer):
        return _session_redis.url
    return _session_redis


@pytest.fixture
def redis_prefix() -> str:
    """A channel prefix of this test's own, so tests running at once never see each other."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_server(redis_binary: str) -> Iterator[Callable[[], RedisServer]]:
    """A factory of private, started Redis servers, each stopped when the test ends."""
    servers: list[RedisServer] = []

    def start() -> RedisServer:
        server = RedisServer(redis_binary)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.close()
