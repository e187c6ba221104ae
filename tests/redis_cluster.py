"""Redis Cluster for the tests and the capacity benchmark: masters (and replicas) on free ports.

`ClusterGroup.start` runs ``redis-server --cluster-enabled yes`` processes (`RedisServer`, so a
test may stop and restart one on its port), joins them with ``redis-cli --cluster create`` and
polls ``CLUSTER INFO`` on every node until the cluster says ``cluster_state:ok`` with every slot
assigned (Redis gives no event to wait on). Fixture ``redis_cluster`` is one cluster of three
masters and three replicas per session; without ``redis-server`` or ``redis-cli`` on PATH its
tests skip, or fail when ``FASTAPI_CHANNELS_REQUIRE_REDIS=1``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis

from tests.redis_ha import until
from tests.redis_support import RedisServer, free_port, redis_unavailable

NODE_TIMEOUT_MS = 1000
"""How long the cluster waits before it calls a silent master failing (and fails it over)."""
SETUP_TIMEOUT = 30.0
FAST_SYNC = ("--repl-diskless-sync-delay", "0")


def client(port: int) -> redis.Redis:
    """A plain client of one node."""
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)


class ClusterNode(RedisServer):
    """A cluster-enabled ``redis-server``; its cluster bus on a free port of its own (Redis's
    default, the port plus 10000, does not exist above port 55535)."""

    def __init__(self, binary: str) -> None:
        options = ("--cluster-enabled", "yes", "--cluster-node-timeout", str(NODE_TIMEOUT_MS))
        super().__init__(binary, *options, *FAST_SYNC)
        self.bus_port = 0

    def command(self, port: int) -> list[str]:
        if not self.bus_port:
            self.bus_port = free_port()
        return [*super().command(port), "--cluster-port", str(self.bus_port)]


@dataclass
class ClusterGroup:
    """A running Redis Cluster: its nodes, masters first as `redis-cli` assigned them."""

    nodes: list[ClusterNode] = field(default_factory=list)

    @classmethod
    def start(cls, masters: int = 3, replicas: int = 0) -> ClusterGroup:
        """Start ``masters`` masters with ``replicas`` replicas each, and wait until it is ok.

        Raises:
            RuntimeError: a binary is missing or the cluster did not form.
        """
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            raise RuntimeError("redis-server and redis-cli are needed on PATH")
        group = cls()
        try:
            for _ in range(masters * (1 + replicas)):
                node = ClusterNode(server)
                group.nodes.append(node)
                node.start()
            if masters < 3:  # below redis-cli's minimum: assign the slots by hand
                if replicas:
                    raise RuntimeError("replicas need at least 3 masters")
                group._assign_slots()
            else:
                addresses = [f"127.0.0.1:{node.port}" for node in group.nodes]
                options = ["--cluster-replicas", str(replicas), "--cluster-yes"]
                subprocess.run(
                    [cli, "--cluster", "create", *addresses, *options],
                    check=True,
                    capture_output=True,
                    timeout=SETUP_TIMEOUT,
                )
            group.wait_ok()
        except BaseException:
            group.close()
            raise
        return group

    def _assign_slots(self) -> None:
        """Give each node an equal share of the slots, and introduce them to each other."""
        share = 16384 // len(self.nodes)
        for i, node in enumerate(self.nodes):
            last = 16383 if i == len(self.nodes) - 1 else (i + 1) * share - 1
            with client(node.port) as c:
                c.execute_command("CLUSTER ADDSLOTSRANGE", i * share, last)
                if i:
                    c.execute_command("CLUSTER MEET", "127.0.0.1", self.nodes[0].port)

    @property
    def url(self) -> str:
        """The broker URL, naming every node as a seed."""
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://{seeds}"

    def masters(self) -> list[ClusterNode]:
        """The running nodes that are masters now."""
        return [node for node in self.nodes if node.running and self.role(node) == "master"]

    def role(self, node: RedisServer) -> str:
        with client(node.port) as c:
            return str(c.execute_command("ROLE")[0])

    def owner(self, key: str) -> ClusterNode:
        """The master that serves ``key``'s slot now."""
        for node in self.masters():
            with client(node.port) as c:
                slot = int(c.execute_command("CLUSTER KEYSLOT", key))
                for start, end, master, *_ in c.execute_command("CLUSTER SLOTS"):
                    if start <= slot <= end and int(master[1]) == node.port:
                        return node
        raise AssertionError(f"no master serves {key!r}")

    def move_slot(self, key: str, target: ClusterNode) -> None:
        """Move ``key``'s slot, with its keys, to the master ``target`` at once."""
        move = self.slot_move(key, target)
        move.begin()
        move.migrate_keys()
        move.finish()

    def slot_move(self, key: str, target: ClusterNode) -> SlotMove:
        """Prepare moving ``key``'s slot to ``target``, to be run step by step."""
        source = self.owner(key)
        with client(source.port) as src:
            slot = int(src.execute_command("CLUSTER KEYSLOT", key))
        return SlotMove(self, slot, source, target)

    def wait_ok(self, within: float = SETUP_TIMEOUT) -> None:
        """Wait until every running node says the cluster is ok, every slot served."""

        def ok() -> bool:
            for node in self.nodes:
                if not node.running:
                    continue
                try:
                    with client(node.port) as c:
                        info = c.execute_command("CLUSTER INFO")
                except redis.RedisError:
                    return False
                if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
                    return False
            return True

        until(ok, "the cluster is ok on every node", within)

    def close(self) -> None:
        for node in self.nodes:
            node.close()


@dataclass
class SlotMove:
    """A slot moving from one master to another, in the steps of ``redis-cli --cluster
    reshard``: `begin` (importing, migrating), `migrate_keys` (``MIGRATE``), `finish` (the new
    owner, told to every master)."""

    cluster: ClusterGroup
    slot: int
    source: ClusterNode
    target: ClusterNode

    def _id(self, node: ClusterNode) -> str:
        with client(node.port) as c:
            return str(c.execute_command("CLUSTER MYID"))

    def begin(self) -> None:
        """The target imports the slot, the source migrates it (``ASK`` for missing keys)."""
        with client(self.source.port) as src, client(self.target.port) as dst:
            dst.execute_command("CLUSTER SETSLOT", self.slot, "IMPORTING", self._id(self.source))
            src.execute_command("CLUSTER SETSLOT", self.slot, "MIGRATING", self._id(self.target))

    def migrate_keys(self) -> int:
        """Move every key of the slot to the target; return how many moved."""
        moved = 0
        with client(self.source.port) as src:
            while keys := src.execute_command("CLUSTER GETKEYSINSLOT", self.slot, 100):
                port = self.target.port
                src.execute_command("MIGRATE", "127.0.0.1", port, "", 0, 5000, "KEYS", *keys)
                moved += len(keys)
        return moved

    def finish(self) -> None:
        """Make the target the owner on both nodes, then on the others (rather than waiting
        for gossip), and wait until the cluster is ok."""
        target_id = self._id(self.target)
        for node in (self.target, self.source):
            with client(node.port) as c:
                c.execute_command("CLUSTER SETSLOT", self.slot, "NODE", target_id)
        for node in self.cluster.masters():
            if node not in (self.source, self.target):
                with client(node.port) as other:
                    other.execute_command("CLUSTER SETSLOT", self.slot, "NODE", target_id)
        self.cluster.wait_ok()


async def flush_cluster_prefix(cluster: ClusterGroup, prefix: str) -> None:
    """Delete every key under ``prefix`` on every master, as a restart without persistence."""
    from redis.asyncio import Redis

    for node in cluster.masters():
        async with Redis(host="127.0.0.1", port=node.port) as master:
            async for key in master.scan_iter(match=f"{prefix}:*"):
                await master.delete(key)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterGroup]:
    """Three masters with a replica each, shared by the session (tests never stop its masters
    for good: a stopped one is started again before the test ends)."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        redis_unavailable("no redis-server and redis-cli binaries on PATH for a Redis Cluster")
    group = ClusterGroup.start(masters=3, replicas=1)
    try:
        yield group
    finally:
        group.close()
