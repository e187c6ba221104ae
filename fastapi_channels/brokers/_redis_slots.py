"""Which Redis Cluster master serves which hash slot: the slot map, read with ``CLUSTER SLOTS``.

The cluster broker reads it when it connects, and again whenever a slot may have moved (a
subscription ended by the server, a lost shard connection, a ``MOVED`` naming a node it does not
link), asking the nodes it knows in turn (the last map's masters, then the URL's seeds) until
one answers; a ``MOVED`` reply to a publish updates that one slot at once (`SlotMap.with_owner`).
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["Address", "SlotMap", "check_serving", "read_slot_map"]

Address = tuple[str, int]
"""A node's host and port."""


@dataclass(frozen=True, slots=True)
class SlotMap:
    """The masters and the slot ranges each serves, sorted by first slot."""

    starts: tuple[int, ...] = ()
    ends: tuple[int, ...] = ()
    owners: tuple[Address, ...] = ()

    @property
    def masters(self) -> frozenset[Address]:
        """Every master that serves at least one slot."""
        return frozenset(self.owners)

    def owner(self, channel: bytes) -> Address | None:
        """The master serving ``channel``'s slot; None if no master serves it."""
        slot = key_slot(channel)
        i = bisect.bisect_right(self.starts, slot) - 1
        if i < 0 or slot > self.ends[i]:
            return None
        return self.owners[i]

    def with_owner(self, slot: int, owner: Address) -> SlotMap:
        """This map, but for ``slot`` served by ``owner`` (what a ``MOVED`` reply tells)."""
        ranges = [(slot, slot, owner)]
        for start, end, served_by in zip(self.starts, self.ends, self.owners, strict=True):
            if start <= slot <= end:
                if start < slot:
                    ranges.append((start, slot - 1, served_by))
                if slot < end:
                    ranges.append((slot + 1, end, served_by))
            else:
                ranges.append((start, end, served_by))
        return SlotMap._of(ranges)

    @classmethod
    def _of(cls, ranges: list[tuple[int, int, Address]]) -> SlotMap:
        ranges.sort()
        return cls(
            tuple(r[0] for r in ranges), tuple(r[1] for r in ranges), tuple(r[2] for r in ranges)
        )

    @classmethod
    def parse(cls, reply: Sequence[Any], asked: Address) -> SlotMap:
        """Read a ``CLUSTER SLOTS`` reply from the node at ``asked``."""
        ranges = []
        for entry in reply:
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            ranges.append((start, end, (host or asked[0], int(master[1]))))
        return cls._of(ranges)


async def check_serving(conn: AbstractConnection, timeout: float) -> None:
    """Make sure the node ``conn`` reached says the cluster is ok (``CLUSTER INFO``).

    A master restarted in place answers, and lists its slots, before it has rejoined: until
    then it answers every command on them ``CLUSTERDOWN``.

    Raises:
        RedisError: the node says the cluster is down, or did not answer within ``timeout``.
    """
    try:
        async with asyncio.timeout(timeout):
            await conn.send_command("CLUSTER", "INFO", check_health=False)
            info = await conn.read_response()
    except TimeoutError as exc:
        raise RedisTimeoutError(f"no answer to CLUSTER INFO within {timeout} s") from exc
    text = info.decode() if isinstance(info, bytes) else str(info)
    if "cluster_state:ok" not in text:
        raise RedisError(f"{conn.host}:{conn.port} says the cluster is down")  # type: ignore[attr-defined]


async def read_slot_map(connect: Any, nodes: Sequence[Address]) -> SlotMap:
    """Ask ``nodes`` in turn for the slot map; the first complete answer wins.

    ``connect(address)`` returns a connected `AbstractConnection`, closed here after use.

    Raises:
        RedisError: no node answered with a map serving every slot.
    """
    errors: list[str] = []
    for address in dict.fromkeys(nodes):
        conn: AbstractConnection | None = None
        try:
            conn = await connect(address)
            await conn.send_command("CLUSTER", "SLOTS", check_health=False)
            found = SlotMap.parse(await conn.read_response(), address)
        except (RedisError, OSError) as exc:
            errors.append(f"{address[0]}:{address[1]}: {exc}")
            continue
        finally:
            if conn is not None:
                await conn.disconnect(nowait=True)
        if (
            sum(end - start + 1 for start, end in zip(found.starts, found.ends, strict=True))
            == 16384
        ):
            return found
        errors.append(f"{address[0]}:{address[1]}: not every slot is served")
    raise RedisError("no cluster node gave the slot map (" + "; ".join(errors) + ")")
