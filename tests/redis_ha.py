"""Redis with failover for the test suite: a master, a replica and a Sentinel, on free ports.

Fixtures ``sentinel_group`` (one per test, which may fail it over) and ``shared_sentinel_group``
(one per session, never failed over) start them from the ``redis-server`` binary (the Sentinel
is ``redis-server <config> --sentinel``, its config in a temporary directory) and stop them all
when they end, whatever happened. Redis leaves no event to wait on for replication and
Sentinel's discoveries, so the fixture polls them, briefly and with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis

from tests.redis_support import RedisServer

SERVICE = "mymaster"
DOWN_AFTER_MS = 500
"""How long the Sentinel waits before it calls a silent master down (and fails it over)."""
SETUP_TIMEOUT = 15.0
FAST_SYNC = ("--repl-diskless-sync-delay", "0")
"""A replica's first sync starts at once (Redis waits 5 s for more replicas by default)."""


class SentinelServer(RedisServer):
    """A Sentinel watching one master, with a quorum of one."""

    ready = b"+monitor master"

    def __init__(self, binary: str, master_port: int) -> None:
        super().__init__(binary)
        self.master_port = master_port

    def command(self, port: int) -> list[str]:
        config = os.path.join(self.dir, "sentinel.conf")
        with open(config, "w") as file:  # Sentinel rewrites it: a new one for every start
            file.write(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 1\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
            )
        return [self.binary, config, "--sentinel", "--daemonize", "no"]


def until(check: Callable[[], bool], what: str, within: float = SETUP_TIMEOUT) -> None:
    """Poll ``check`` every 50 ms until it holds; fail after ``within`` seconds.

    Only for what an external Redis process decides with no signal to wait on.
    """
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.05)


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)


@dataclass
class SentinelGroup:
    """A master, its replica and a Sentinel, as one deployment of Redis."""

    master: RedisServer
    replica: RedisServer
    sentinel: SentinelServer

    @property
    def url(self) -> str:
        """The broker URL: the Sentinel and the service."""
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{SERVICE}/0"

    def master_port(self) -> int:
        """The port of the master the Sentinel names now."""
        with _client(self.sentinel.port) as client:
            _, port = client.sentinel_get_master_addr_by_name(SERVICE)
            return int(port)

    def failover(self) -> None:
        """Have the Sentinel promote the replica now (the old master stays up, and is demoted)."""
        with _client(self.sentinel.port) as client:
            client.execute_command("SENTINEL", "FAILOVER", SERVICE)

    def wait_for_master(self, port: int, within: float = SETUP_TIMEOUT) -> None:
        """Wait until the Sentinel names the server on ``port`` as the master."""
        until(lambda: self.master_port() == port, f"the master moves to {port}", within)

    def replicated(self) -> bool:
        """Whether the replica is in sync and the Sentinel knows it as a healthy replica."""
        with _client(self.replica.port) as replica:
            if replica.info("replication").get("master_link_status") != "up":
                return False
        with _client(self.sentinel.port) as sentinel:
            replicas = sentinel.sentinel_slaves(SERVICE)
        return any(
            r["port"] == self.replica.port and not r["is_sdown"] and r["master-link-status"] == "ok"
            for r in replicas
        )


@contextlib.contextmanager
def running_sentinel_group(binary: str) -> Iterator[SentinelGroup]:
    """Start a master, a replica and a Sentinel on free loopback ports; stop them all after."""
    servers: list[RedisServer] = []
    try:
        master = RedisServer(binary, *FAST_SYNC)
        servers.append(master)
        master.start()
        replica = RedisServer(binary, "--replicaof", "127.0.0.1", str(master.port), *FAST_SYNC)
        servers.append(replica)
        replica.start()
        sentinel = SentinelServer(binary, master.port)
        servers.append(sentinel)
        sentinel.start()
        group = SentinelGroup(master, replica, sentinel)
        until(group.replicated, "the replica is in sync and known to the Sentinel")
        yield group
    finally:
        for server in reversed(servers):
            server.close()


@pytest.fixture
def sentinel_group(redis_binary: str) -> Iterator[SentinelGroup]:
    """A Sentinel group of this test's own, which it may fail over."""
    with running_sentinel_group(redis_binary) as group:
        yield group


@pytest.fixture(scope="session")
def shared_sentinel_group(redis_binary: str) -> Iterator[SentinelGroup]:
    """A Sentinel group shared by the tests that never fail it over (the contract suite)."""
    with running_sentinel_group(redis_binary) as group:
        yield group
