"""History and presence on Redis Cluster: the Redis store's scripts, each within one hash slot.

Every key of one topic carries the topic as its hash tag (``P:history:{c:room}``,
``P:presence-local:<process>:{p:room}``...), so each script touches one slot, served by one
shard, and publishes there with ``SPUBLISH``. Topics spread over the slots, so adding shards
adds room for history and presence as it does for messages.

Two things span topics, and so slots; each is a step of its own:

* **liveness**: every process renews its deadline in one sorted set (``P:{presence-alive}``),
  one command per renewal whatever its number of topics. A sweep first reads the live
  processes there (a script, on that node's clock), then passes them to each topic's sweep
  script. A process renewing between the two had expired already: its renewal reports it was
  dead and it registers its members again.
* **the history quota** (``History(max_channels=...)``): a script on the group's key
  (``P:history-quota:{<group>}``) admits the topic, then the publish runs on the topic's
  slot. A publish failing after its admission leaves the topic counted until its ``keep``
  runs out.

Commands go through redis-py's cluster client, which follows ``MOVED`` and ``ASK`` to the
slot's owner and re-reads the slot map after a failover; while a slot migrates, the store
follows ``ASK`` itself (`ClusterStore._one`), and sends a script answered ``TRYAGAIN`` (its
keys split between the two nodes: it did not run) again for up to 2 s. A command whose
connection fails is not retried (it may have run), so a stored publish then raises
`OutcomeUnknown`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Sequence
from typing import Any, Final

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    NoScriptError,
    RedisError,
    ResponseError,
    TryAgainError,
)

from fastapi_channels.brokers._redis_store import (
    _COMMON,
    _LIVENESS,
    _QUOTA,
    RedisStore,
    _Call,
    _full,
    _ms,
    _Script,
)
from fastapi_channels.brokers.stores import Retention
from fastapi_channels.wire.errors import BrokerError, OutcomeUnknown

__all__ = ["ClusterStore"]

_ADMIT: Final = (
    _COMMON
    + _QUOTA
    + """
if admitted(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), now_ms()) then
  return 1
end
return 0
"""
)
"""KEYS: the group's quota. ARGV: topic, max topics, keep ms. Returns whether it is admitted."""

logger = logging.getLogger("fastapi_channels.brokers.redis")

_TRYAGAIN_PAUSE: Final = 0.05
_TRYAGAIN_FOR: Final = 2.0
_TRYAGAIN_ROUNDS: Final = int(_TRYAGAIN_FOR / _TRYAGAIN_PAUSE)

_CLIENT_OPTIONS: Final = frozenset(inspect.signature(RedisCluster.__init__).parameters) - {
    "self",
    "host",
    "port",
    "startup_nodes",
}


class ClusterStore(RedisStore):
    """`RedisStore` on Redis Cluster, through redis-py's cluster client.

    Args:
        seeds: nodes to learn the cluster's layout from.
        options: the connection options of the broker's URL (``host`` and ``port`` ignored).
        prefix: the broker's prefix (without ``{`` or ``}``).
        process: this process's name among the processes (hex).
        connections: the most connections opened to each node.

    Commands of different topics run concurrently, each on its slot's node; stored publishes
    are batched as on one server, a batch's scripts sent at once.
    """

    def __init__(
        self,
        seeds: Sequence[tuple[str, int]],
        options: dict[str, Any],
        prefix: str,
        process: str,
        *,
        connections: int = 8,
    ) -> None:
        kwargs = {key: value for key, value in options.items() if key in _CLIENT_OPTIONS}
        if options.get("connection_class") is SSLConnection:
            kwargs["ssl"] = True
        self._client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in seeds],
            max_connections=connections,
            **kwargs,
        )
        self._setup(prefix, process, follow_master=True, on_failure=None, cluster=True)
        self._alive = self._key("{presence-alive}")
        self._unsettled = self._key("{presence-alive}-unsettled")
        self._live = _Script.of(_LIVENESS)
        self._admission = _Script.of(_ADMIT)

    def _tag(self, topic: str) -> str:
        return "{" + topic + "}"

    def _history_keys(self, topic: str, retention: Retention) -> list[bytes]:
        keys = super()._history_keys(topic, retention)
        keys[2] = self._key("history-quota:", self._tag(topic))  # never touched: max is 0
        return keys

    def _publish_keys(self, topic: str, retention: Retention) -> list[bytes]:
        keys = super()._publish_keys(topic, retention)
        # Never touched (max is 0: the quota is `_admit`'s step), but named: the meta key
        # again, so that while the slot migrates the script finds all its keys on one node
        # (a key missing there would have it answered TRYAGAIN until the migration ends).
        keys[2] = keys[0]
        return keys

    def _stored_args(
        self, channel: bytes, topic: str, data: bytes, retention: Retention
    ) -> list[Any]:
        args = super()._stored_args(channel, topic, data, retention)
        args[7] = 0  # the quota is `_admit`'s step
        return args

    async def _admit(self, topic: str, retention: Retention) -> None:
        if not retention.max_topics:
            return
        quota = self._key("history-quota:", self._tag(retention.group))
        args = [topic.encode("utf-8", "surrogatepass"), retention.max_topics, _ms(retention.keep)]
        if not await self._call(self._admission, [quota], args):
            raise _full(retention)

    async def _liveness(self) -> list[Any]:
        unsettled_ms, live = await self._call(self._live, [self._alive, self._unsettled], [])
        return [unsettled_ms, *live]

    def _sweep_call(self, channel: bytes, topic: str, what: str, announce: Any, live: Any) -> _Call:
        script, keys, args = super()._sweep_call(channel, topic, what, announce, live)
        return script, keys[:3], [*args, *live]

    async def _close_client(self) -> None:
        await self._client.aclose()

    async def reset(self) -> None:
        """Close every connection and forget the slot map: the next command reads it again.

        The cluster client follows ``MOVED`` itself, but a connection to a master that stopped
        fails only when next used; commands running now fail with `BrokerError`.
        """
        await self._client.aclose()

    async def _one(self, call: _Call) -> Any:
        """Run one script on its slot's master, through a slot migration if need be.

        The cluster client follows ``MOVED``, but not ``ASK`` reliably (it sends ``ASKING`` on
        one pooled connection and the script on another, which the importing node answers
        ``MOVED`` back), and gives up after a few ``TRYAGAIN``; it then raises a bare
        `ClusterError`. The script did not run: it is sent to the slot's owner directly,
        following one ``ASK`` on a single connection (`_asked`), and, while the migration
        answers ``TRYAGAIN`` (the script's keys split between the two nodes), again every
        `_TRYAGAIN_PAUSE` for up to `_TRYAGAIN_FOR` seconds, as moving a slot's keys usually
        takes milliseconds.
        """
        for _ in range(_TRYAGAIN_ROUNDS):
            try:
                return await self._evaluate(call)
            except ClusterError as exc:
                if isinstance(exc, ClusterDownError):
                    raise
            try:
                return await self._asked(call)
            except TryAgainError:
                logger.debug("a script met TRYAGAIN (its slot is migrating); sending it again")
                await asyncio.sleep(_TRYAGAIN_PAUSE)
        return await self._evaluate(call)

    async def _asked(self, call: _Call) -> Any:
        """Run a script on its slot's owner; on ``ASK``, on the node named, after ``ASKING``."""
        script, keys, args = call
        owner = self._client.get_node_from_key(keys[0])
        command = ("EVAL", script.source, len(keys), *keys, *args)
        if owner is None:
            raise ClusterError(f"no node serves the slot of {keys[0]!r}")
        try:
            return await owner.execute_command(*command)
        except AskError as ask:
            node = self._client.get_node(ask.host or owner.host, ask.port)
            if node is None:
                raise
            conn = node.acquire_connection()
            try:
                await conn.send_packed_command(conn.pack_commands([("ASKING",), command]))
                await conn.read_response()
                return await conn.read_response()
            except BaseException:
                await conn.disconnect()
                raise
            finally:
                node.release(conn)

    async def _evaluate(self, call: _Call) -> Any:
        script, keys, args = call
        try:
            return await self._client.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:  # a node that restarted or never ran it: EVAL loads it there
            return await self._client.eval(script.source, len(keys), *keys, *args)

    async def _gather(self, calls: Sequence[_Call]) -> list[Any]:
        results = await asyncio.gather(*(self._one(call) for call in calls), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancelled
        return results

    async def _run(self, calls: Sequence[_Call]) -> list[Any]:
        results = await self._gather(calls)
        lost = next((r for r in results if _transport_error(r)), None)
        if lost is not None:
            raise BrokerError(f"Redis did not answer: {lost}") from lost
        return results

    async def _run_publishes(self, calls: Sequence[_Call]) -> list[Any]:
        results = await self._gather(calls)
        return [
            OutcomeUnknown(f"Redis did not answer in time: {result}")
            if _transport_error(result)
            else result
            for result in results
        ]


def _transport_error(result: Any) -> bool:
    return isinstance(result, RedisError | OSError) and not isinstance(result, ResponseError)
