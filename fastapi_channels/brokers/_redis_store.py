"""History and presence in Redis, for the Redis broker: keys, Lua scripts and their replies.

Every change is one Lua script, so it is atomic, and a script that changes what subscribers
must hear publishes it itself, in the same step: processes receive stored messages in offset
order and presence announcements in the order the changes happened. Such a message is a Redis
payload of the ``scripted`` framing (see `fastapi_channels.brokers._frames`), which every
process delivers, the publishing one included.

Keys, under the broker's prefix ``P`` (topics are ``c:<channel>`` and ``p:<channel>``):

* ``P:history-meta:<topic>``, a hash: ``epoch`` and ``top`` (the last offset), and, when the
  master may change (Sentinel), ``node``: the replication id of the master that wrote them;
* ``P:history:<topic>``, a stream of ``o`` (offset) and ``d`` (data) entries, trimmed to the
  retention's size (``MAXLEN ~``) and age (``MINID ~``, on Redis's clock);
* ``P:history-quota:<group>``, a sorted set: each topic of the group that holds history, to the
  time (ms, Redis's clock) its history expires; a publish or read that would add one topic too
  many to a group with ``max_topics`` finds the expired ones out first, and is refused when
  none is;
* ``P:presence:<topic>``, a hash: member to info;
* ``P:presence-holders:<topic>``, a hash: member to the number of processes holding it;
* ``P:presence-procs:<topic>``, a set: the processes holding members there;
* ``P:presence-local:<process>:<topic>``, a hash: that process's members there;
* ``P:presence-alive``, a sorted set: process to the deadline (ms, Redis's clock) before which
  it must renew;
* ``P:once:<topic> <key>``, a string: an idempotency key published on the topic (the stored
  message's ``<offset>:<epoch>``, else empty), expiring when its window ends.
* ``P:presence-unsettled``, a string that exists for one renewal timeout after a process that
  had renewed found no live process at all (Redis lost the records): member lists read
  meanwhile are partial.

On Redis Cluster (`fastapi_channels.brokers._redis_cluster_store`) every ``<topic>`` above is
written ``{<topic>}``, a hash tag, so one topic's keys share a slot (the scripts compute the
``presence-local`` key of each process they sweep the same way); the alive and unsettled keys
share the tag ``{presence-alive}``, and what spans slots (liveness, the quota) is a step of its
own there.

History keys expire ``keep`` after the last publish; presence keys ``keep`` after their last
join or sweep.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from fastapi_channels.brokers import _frames
from fastapi_channels.brokers.idempotency import Published
from fastapi_channels.brokers.stores import (
    Announcements,
    Position,
    PresenceSnapshot,
    Retention,
    Stored,
    StoredEntry,
)
from fastapi_channels.wire.errors import BrokerError, HistoryFull, OutcomeUnknown

__all__ = ["RedisStore", "parse_position"]

_EPOCH_RE: Final = re.compile(rb"[0-9A-Za-z_-]{1,64}")

_COMMON: Final = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

_EPOCH: Final = """
local function epoch_of(meta, new_epoch, follow)
  local epoch = redis.call('HGET', meta, 'epoch')
  if follow == '1' then
    local info = redis.call('INFO', 'replication')
    local node = string.match(info, 'master_replid:(%w+)')
    if epoch and redis.call('HGET', meta, 'node') ~= node then
      epoch = false
    end
    if not epoch then
      redis.call('HSET', meta, 'node', node)
    end
  end
  if epoch then
    return epoch, false
  end
  redis.call('HSET', meta, 'epoch', new_epoch)
  return new_epoch, true
end
"""
"""A history's epoch, a new one when it has none. With ``follow`` (``'1'``), also a new one when
the server is not the master that wrote the history: a promoted replica gets a new replication
id, and the writes the old master had not replicated yet are lost, so their offsets must not
be reused within the epoch clients know."""

_QUOTA: Final = """
local function admitted(quota, topic, max, keep, now)
  if max == 0 then
    return true
  end
  if redis.call('ZSCORE', quota, topic) == false and redis.call('ZCARD', quota) >= max then
    redis.call('ZREMRANGEBYSCORE', quota, '-inf', string.format('%d', now))
    if redis.call('ZCARD', quota) >= max then
      return false
    end
  end
  redis.call('ZADD', quota, now + keep, topic)
  redis.call('PEXPIRE', quota, keep)
  return true
end
"""
"""The quota step: count ``topic`` in its group (a sorted set of topic to the time its history
expires) unless the group has ``max`` topics holding history already. ``max`` 0: no bound."""

_STORE: Final = (
    _EPOCH
    + _QUOTA
    + """
local keep = tonumber(ARGV[5])
local had = redis.call('HEXISTS', KEYS[1], 'epoch') == 1
if not admitted(KEYS[3], ARGV[9], tonumber(ARGV[8]), keep, now_ms()) and not had then
  return 0
end
local epoch = epoch_of(KEYS[1], ARGV[6], ARGV[7])
local offset = redis.call('HINCRBY', KEYS[1], 'top', 1)
local id = string.format('%d', offset)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'o', id, 'd', ARGV[2])
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('XTRIM', KEYS[2], 'MINID', '~', string.format('%d', now_ms() - ttl))
  redis.call('PEXPIRE', KEYS[2], math.min(ttl, keep))
else
  redis.call('PEXPIRE', KEYS[2], keep)
end
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PUBLISH', ARGV[1], '\\2' .. id .. ':' .. epoch .. '\\n' .. ARGV[2])
"""
)
"""The store-and-publish shared by the stored publishes (KEYS and ARGV as `_PUBLISH_STORED`);
it returns 0 at once when the quota refuses a topic that holds no history."""

_PUBLISH_STORED: Final = _COMMON + _STORE + "return {offset, epoch}\n"
"""KEYS: meta, stream, quota. ARGV: Redis channel, data, size, ttl ms (0: none), keep ms, new
epoch, follow the master (``'1'``) or not, max topics (0: none), topic. Returns the offset and
epoch, or 0 when the quota refused."""

_PUBLISH_STORED_ONCE: Final = (
    _COMMON
    + """
local seen = redis.call('GET', KEYS[4])
if seen then
  return {0, seen}
end
"""
    + _STORE
    + """
redis.call('SET', KEYS[4], id .. ':' .. epoch, 'PX', ARGV[10])
return {1, id .. ':' .. epoch}
"""
)
"""KEYS: meta, stream, quota, seen key. ARGV: as `_PUBLISH_STORED`, then the window in ms.
Returns whether it published, and the position (the first publish's on a duplicate); or 0
when the quota refused (nothing recorded)."""

_PUBLISH_ONCE: Final = """
if redis.call('SET', KEYS[1], '', 'NX', 'PX', ARGV[3]) then
  redis.call('PUBLISH', ARGV[1], ARGV[2])
  return 1
end
return 0
"""
"""KEYS: seen key. ARGV: Redis channel, payload (scripted framing), window ms. Returns whether
it published."""

_READ_STORED: Final = (
    _COMMON
    + _EPOCH
    + _QUOTA
    + """
local had = redis.call('HEXISTS', KEYS[1], 'epoch') == 1
if not had and not admitted(KEYS[3], ARGV[8], tonumber(ARGV[7]), tonumber(ARGV[4]), now_ms()) then
  return {ARGV[5], 0}
end
local epoch, fresh = epoch_of(KEYS[1], ARGV[5], ARGV[6])
if fresh then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
local top = tonumber(redis.call('HGET', KEYS[1], 'top') or '0')
local first = math.max(tonumber(ARGV[1]), top - tonumber(ARGV[2])) + 1
local result = {epoch, top}
if first > top then
  return result
end
local ttl = tonumber(ARGV[3])
local oldest = 0
if ttl > 0 then
  oldest = now_ms() - ttl
end
local entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', top - first + 1)
for _, entry in ipairs(entries) do
  local offset = tonumber(entry[2][2])
  local ms = tonumber(string.match(entry[1], '^(%d+)'))
  if offset < first or ms < oldest then
    break
  end
  table.insert(result, offset)
  table.insert(result, entry[2][4])
end
return result
"""
)
"""KEYS: meta, stream, quota. ARGV: after, size, ttl ms (0: none), keep ms, new epoch, follow,
max topics (0: none), topic. Returns epoch, top, then offset and data of each retained entry
above ``after``, newest first. A topic without an epoch that the quota refuses gets a fresh
epoch, not kept."""

_PRESENCE: Final = (
    _COMMON
    + """
local function announcer(i)
  return {channel = ARGV[i], join = {ARGV[i + 1], ARGV[i + 2]}, leave = {ARGV[i + 3], ARGV[i + 4]}}
end

local function announce(a, kind, info)
  redis.call('PUBLISH', a.channel, '\\2\\n' .. a[kind][1] .. info .. a[kind][2])
end

local function add(localkey, proc, member, info, a)
  if redis.call('HSETNX', localkey, member, '1') == 0 then
    return 0
  end
  redis.call('SADD', KEYS[3], proc)
  if redis.call('HINCRBY', KEYS[2], member, 1) > 1 then
    return 0
  end
  redis.call('HSET', KEYS[1], member, info)
  announce(a, 'join', info)
  return 1
end

local function remove(localkey, proc, member, a)
  if redis.call('HDEL', localkey, member) == 0 then
    return 0
  end
  if redis.call('EXISTS', localkey) == 0 then
    redis.call('SREM', KEYS[3], proc)
  end
  if redis.call('HINCRBY', KEYS[2], member, -1) > 0 then
    return 0
  end
  redis.call('HDEL', KEYS[2], member)
  local info = redis.call('HGET', KEYS[1], member)
  redis.call('HDEL', KEYS[1], member)
  if info then
    announce(a, 'leave', info)
  end
  return 1
end

local function sweep(dead, localprefix, topic, a)
  for _, proc in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    if dead(proc) then
      local localkey = localprefix .. proc .. ':' .. topic
      for _, member in ipairs(redis.call('HKEYS', localkey)) do
        remove(localkey, proc, member, a)
      end
      redis.call('DEL', localkey)
      redis.call('SREM', KEYS[3], proc)
    end
  end
end

local function keep(localkey, ms)
  for i = 1, 3 do
    redis.call('PEXPIRE', KEYS[i], ms)
  end
  if localkey then
    redis.call('PEXPIRE', localkey, ms)
  end
end
"""
)
"""Functions shared by the presence scripts. KEYS[1..3]: members, holders, procs."""

_UPDATE: Final = (
    _PRESENCE
    + """
local a = announcer(3)
local count = tonumber(ARGV[8])
local joined, left = {}, {}
for i = 9, 8 + count do
  if remove(KEYS[4], ARGV[1], ARGV[i], a) == 1 then
    table.insert(left, ARGV[i])
  end
end
for i = 9 + count, #ARGV, 2 do
  if add(KEYS[4], ARGV[1], ARGV[i], ARGV[i + 1], a) == 1 then
    table.insert(joined, ARGV[i])
  end
end
keep(KEYS[4], ARGV[2])
return {joined, left}
"""
)
"""KEYS: members, holders, procs, local. ARGV: process, keep ms, announcer, the number of members
leaving, those members, then member and info pairs joining."""

_SYNC: Final = (
    _PRESENCE
    + """
local a = announcer(3)
local wanted = {}
for i = 8, #ARGV, 2 do
  wanted[ARGV[i]] = ARGV[i + 1]
end
for _, member in ipairs(redis.call('HKEYS', KEYS[4])) do
  if not wanted[member] then
    remove(KEYS[4], ARGV[1], member, a)
  end
end
for i = 8, #ARGV, 2 do
  add(KEYS[4], ARGV[1], ARGV[i], ARGV[i + 1], a)
end
keep(KEYS[4], ARGV[2])
return 1
"""
)
"""KEYS: members, holders, procs, local. ARGV: process, keep ms, announcer, then member and info
pairs."""

_BY_DEADLINE: Final = """
local now = now_ms()
local function dead(proc)
  local deadline = redis.call('ZSCORE', KEYS[4], proc)
  return not deadline or tonumber(deadline) < now
end
local function unsettled_ms()
  return redis.call('PTTL', KEYS[5])
end
"""
"""Liveness read from the deadlines in KEYS[4] (alive) and KEYS[5] (unsettled)."""

_BY_LIST: Final = """
local live = {}
for i = 12, #ARGV do
  live[ARGV[i]] = true
end
local function dead(proc)
  return not live[proc]
end
local function unsettled_ms()
  return tonumber(ARGV[11])
end
"""
"""Liveness given by the caller (Redis Cluster, where the alive key lives in another slot):
ARGV[11] the ms the store stays unsettled, ARGV[12...] the live processes."""

_SWEEP_BODY: Final = """
local what = ARGV[5]
local registered = not dead(ARGV[3])
if registered or what ~= 'snapshot' then
  sweep(dead, ARGV[1], ARGV[2], announcer(6))
end
local localkey = ARGV[1] .. ARGV[3] .. ':' .. ARGV[2]
keep(localkey, ARGV[4])
if what == 'members' then
  return redis.call('HGETALL', KEYS[1])
elseif what == 'snapshot' then
  return {redis.call('HGETALL', KEYS[1]), unsettled_ms(), registered and 1 or 0}
elseif what == 'count' then
  return redis.call('HLEN', KEYS[2])
end
return redis.call('HLEN', localkey)
"""

_SWEEP: Final = _PRESENCE + _BY_DEADLINE + _SWEEP_BODY
"""KEYS: members, holders, procs, alive, unsettled. ARGV: local key prefix, topic, process, keep
ms, what to return (``members``, ``snapshot``: the members, the ms the store stays unsettled
and whether this process is alive, ``count``, or ``held``: this process's member count),
announcer. A snapshot by a process that is not alive sweeps nothing."""

_SWEEP_LISTED: Final = _PRESENCE + _BY_LIST + _SWEEP_BODY
"""As `_SWEEP`, without the alive and unsettled keys: KEYS members, holders, procs; ARGV as
`_SWEEP`'s, then the ms the store stays unsettled, then the live processes."""

_LIVENESS: Final = (
    _COMMON
    + """
local live = redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%d', now_ms()), '+inf')
return {redis.call('PTTL', KEYS[2]), live}
"""
)
"""KEYS: alive, unsettled. Returns the ms the store stays unsettled and the live processes."""

_RENEW: Final = (
    _COMMON
    + """
local now = now_ms()
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
local alive = deadline and tonumber(deadline) >= now
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', now))
if ARGV[4] == '1' and not alive and redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2], 'NX')
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if alive then
  return 1
end
return 0
"""
)
"""KEYS: alive, unsettled. ARGV: process, timeout ms, keep ms, whether the process's previous
renewal succeeded (``1``). Returns whether the process was alive. A process that was alive
finding no live process at all means Redis lost the records: the store is unsettled for the
timeout (``SET NX PX``: the first process to find it starts the window)."""


def parse_position(header: bytes) -> Position:
    """Read ``<offset>:<epoch>``, the header of a stored message.

    Raises:
        ValueError: the header is malformed.
    """
    offset, _, epoch = header.partition(b":")
    if not offset.isdigit() or _EPOCH_RE.fullmatch(epoch) is None:
        raise ValueError(f"malformed position {header[:80]!r}")
    return Position(int(offset), epoch.decode())


def _full(retention: Retention) -> HistoryFull:
    return HistoryFull(
        f"{retention.group!r} has {retention.max_topics} channels with history already"
    )


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a failure as seen: a cancelled publisher no longer awaits it."""
    if not future.cancelled():
        future.exception()


async def _pipeline_on(conn: Any, calls: Sequence[_Call]) -> list[Any]:
    """Send ``EVALSHA`` for each call in one write on ``conn``; read each reply or its error."""
    commands = [(b"EVALSHA", s.sha, len(keys), *keys, *args) for s, keys, args in calls]
    await conn.send_packed_command(conn.pack_commands(commands))
    results: list[Any] = []
    for _ in commands:
        try:
            results.append(await conn.read_response())
        except ResponseError as exc:  # a script's own error; the connection stays usable
            results.append(exc)
    return results


@dataclass(frozen=True, slots=True)
class _Script:
    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> _Script:
        return cls(source, hashlib.sha1(source.encode()).hexdigest())  # the id Redis gives it


_Call = tuple[_Script, Sequence[Any], Sequence[Any]]


class RedisStore:
    """History and presence commands on a small pool of Redis connections of their own.

    Every command is a Lua script run with ``EVALSHA`` (loaded again if Redis lost it). Stored
    publishes are batched: those that arrive while a batch is in flight go together, pipelined
    in the next one, in arrival order. At most ``connections`` commands run at once; the others
    wait for a connection, up to ``timeout``.

    Args:
        pool: the broker's connection pool (its URL and options).
        prefix: the broker's prefix.
        process: this process's name among the processes (hex).
        connections: the most connections this store opens.
        timeout: seconds to wait for a free connection.
        follow_master: the master may change (Sentinel): a history read or written on
            another master than the one that wrote it gets a new epoch (see ``_EPOCH``).
        on_failure: called when Redis could not be reached or refused to run a script as
            a master would (``READONLY``), so the broker checks where the master is.

    Presence records are kept 60 s, or three times the renewal timeout if longer, after their
    last join or sweep.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        prefix: str,
        process: str,
        *,
        connections: int = 8,
        timeout: float = 5.0,
        follow_master: bool = False,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self._pool = BlockingConnectionPool(
            connection_class=pool.connection_class,
            max_connections=connections,
            timeout=timeout,
            **pool.connection_kwargs,
        )
        self._client: Any = Redis(connection_pool=self._pool)
        self._setup(prefix, process, follow_master, on_failure)

    def _setup(
        self,
        prefix: str,
        process: str,
        follow_master: bool,
        on_failure: Callable[[], None] | None,
        cluster: bool = False,
    ) -> None:
        """Set what does not depend on the connections: names, keys and scripts.

        On a ``cluster`` the scripts publish with ``SPUBLISH`` and sweep the processes they are
        told are alive (`_SWEEP_LISTED`).
        """
        publish = "SPUBLISH" if cluster else "PUBLISH"
        self._prefix = prefix
        self.process = process
        self._follow = "1" if follow_master else "0"
        self._on_failure = on_failure

        def script(source: str) -> _Script:
            return _Script.of(source.replace("redis.call('PUBLISH'", f"redis.call('{publish}'"))

        self._publish = script(_PUBLISH_STORED)
        self._publish_stored_once = script(_PUBLISH_STORED_ONCE)
        self._publish_once = script(_PUBLISH_ONCE)
        self._read = script(_READ_STORED)
        self._update = script(_UPDATE)
        self._sync = script(_SYNC)
        self._sweep = script(_SWEEP_LISTED if cluster else _SWEEP)
        self._renew = script(_RENEW)
        self._alive = self._key("presence-alive")
        self._unsettled = self._key("presence-unsettled")
        self._local_prefix = self._key("presence-local:")
        self._keep_ms = 60_000
        self._waiting: list[tuple[_Call, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def close(self) -> None:
        """Fail the publishes still waiting and close the connections."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            await asyncio.wait({flusher})
        waiting, self._waiting = self._waiting, []
        for _, future in waiting:
            if not future.done():
                future.set_exception(BrokerError("the broker stopped before this was stored"))
        await self._close_client()

    async def _close_client(self) -> None:
        await self._client.aclose(close_connection_pool=True)

    async def reset(self) -> None:
        """Close every connection, so each reconnects (to the current master) when next used.

        Commands running on them fail with `BrokerError`.
        """
        await self._pool.disconnect()

    def _key(self, name: str, topic: str = "") -> bytes:
        return f"{self._prefix}:{name}{topic}".encode("utf-8", "surrogatepass")

    def _tag(self, topic: str) -> str:
        """How ``topic`` appears in its keys (a cluster puts it in a hash tag)."""
        return topic

    async def _run(self, calls: Sequence[_Call]) -> list[Any]:
        """Run scripts pipelined in one round trip; each result, or its error, in order.

        Raises:
            BrokerError: Redis could not be reached (for every call).
        """
        try:
            results = await self._pipeline(calls)
            lost = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
            if lost:  # Redis restarted or flushed its scripts: load them and run those again
                for script in {calls[i][0] for i in lost}:
                    await self._client.script_load(script.source)
                for i, result in zip(
                    lost, await self._pipeline([calls[i] for i in lost]), strict=True
                ):
                    results[i] = result
        except (RedisError, OSError) as exc:
            self._failed()
            raise BrokerError(f"Redis did not answer: {exc}") from exc
        return results

    async def _pipeline(self, calls: Sequence[_Call]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    async def _call(self, script: _Script, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        [result] = await self._run([(script, keys, args)])
        if isinstance(result, Exception):
            raise BrokerError(f"Redis refused the command: {result}") from result
        return result

    # ------------------------------------------------------------------ history

    def _history_keys(self, topic: str, retention: Retention) -> list[bytes]:
        return [
            self._key("history-meta:", self._tag(topic)),
            self._key("history:", self._tag(topic)),
            self._key("history-quota:", retention.group),
        ]

    def _publish_keys(self, topic: str, retention: Retention) -> list[bytes]:
        """The keys a stored publish names: the history's (the cluster names fewer)."""
        return self._history_keys(topic, retention)

    async def publish_stored(
        self, channel: bytes, topic: str, data: bytes, retention: Retention
    ) -> Position:
        """Append and publish on ``channel`` in one script; return the position.

        Raises:
            HistoryFull: the topic holds no history and its group is full; nothing was stored.
            BrokerError: Redis could not be reached; nothing was stored.
            OutcomeUnknown: Redis did not answer in time; the message may have been stored.
        """
        await self._admit(topic, retention)
        result = await self._enqueue(
            self._publish,
            self._publish_keys(topic, retention),
            self._stored_args(channel, topic, data, retention),
        )
        if result == 0:
            raise _full(retention)
        offset, epoch = result
        return Position(int(offset), bytes(epoch).decode())

    async def publish_once(
        self,
        channel: bytes,
        topic: str,
        data: bytes,
        key: str,
        window: float,
        retention: Retention | None,
    ) -> Published:
        """Publish (and store, with ``retention``) unless ``key`` was seen; one script.

        Raises:
            BrokerError: Redis could not be reached; nothing was published or recorded.
            OutcomeUnknown: Redis did not answer in time; the message may have been published.
        """
        seen = self._key("once:", f"{self._tag(topic)} {key}")
        if retention is None:
            payload = _frames.pack_scripted(b"", data)
            published = await self._enqueue(
                self._publish_once, [seen], [channel, payload, _ms(window)]
            )
            return Published(duplicate=not published)
        await self._admit(topic, retention)
        args = [*self._stored_args(channel, topic, data, retention), _ms(window)]
        result = await self._enqueue(
            self._publish_stored_once, [*self._publish_keys(topic, retention), seen], args
        )
        if result == 0:
            raise _full(retention)
        fresh, position = result
        found = parse_position(bytes(position)) if position else None
        return Published(duplicate=not fresh, position=found)

    async def _admit(self, topic: str, retention: Retention) -> None:
        """Count ``topic`` in its group's quota before storing, where the scripts cannot.

        Here the scripts count it themselves, atomically with the append.
        """

    def _stored_args(
        self, channel: bytes, topic: str, data: bytes, retention: Retention
    ) -> list[Any]:
        ttl = _ms(retention.ttl) if retention.ttl is not None else 0
        keep, epoch = _ms(retention.keep), secrets.token_hex(6)
        args = [channel, data, retention.size, ttl, keep, epoch, self._follow]
        return [*args, retention.max_topics or 0, topic.encode("utf-8", "surrogatepass")]

    async def _enqueue(self, script: _Script, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        """Run a publishing script in the next pipelined batch; return its result."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._waiting.append(((script, keys, args), future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="fastapi_channels.redis.store")
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        """Run waiting publishes, one pipelined batch at a time, until none waits."""
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    results = await self._run_publishes([call for call, _ in batch])
                except BrokerError as exc:
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BrokerError):
                        future.set_exception(result)
                    elif isinstance(result, Exception):
                        self._failed()  # a demoted master answers READONLY
                        future.set_exception(BrokerError(f"Redis refused the message: {result}"))
                    else:
                        future.set_result(result)
        finally:
            self._flusher = None

    def _failed(self) -> None:
        """Tell the broker a command failed (behind Sentinel: look for the master at once)."""
        if self._on_failure is not None:
            self._on_failure()

    async def _run_publishes(self, calls: Sequence[_Call]) -> list[Any]:
        """Run publishing scripts pipelined on one connection; each result or error, in order.

        A failure to get a connection means nothing was sent (`BrokerError`); a failure after
        the commands were written means Redis may have run them (`OutcomeUnknown`).
        """
        try:
            conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        except (RedisError, OSError) as exc:
            self._failed()
            raise BrokerError(f"Redis could not be reached: {exc}") from exc
        try:
            results = await _pipeline_on(conn, calls)
            lost = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
            if lost:  # Redis restarted or flushed its scripts: they did not run, run them again
                scripts = {calls[i][0] for i in lost}
                await conn.send_packed_command(
                    conn.pack_commands([("SCRIPT", "LOAD", s.source) for s in scripts])
                )
                for _ in scripts:
                    await conn.read_response()
                again = await _pipeline_on(conn, [calls[i] for i in lost])
                for i, result in zip(lost, again, strict=True):
                    results[i] = result
        except (RedisError, OSError) as exc:
            await conn.disconnect(nowait=True)
            self._failed()
            raise OutcomeUnknown(f"Redis did not answer in time: {exc}") from exc
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        finally:
            await self._pool.release(conn)
        return results

    async def read_stored(self, topic: str, retention: Retention, after: int) -> Stored:
        """Read the retained messages above ``after``."""
        ttl = _ms(retention.ttl) if retention.ttl is not None else 0
        args = [after, retention.size, ttl, _ms(retention.keep), secrets.token_hex(6), self._follow]
        args += [retention.max_topics or 0, topic.encode("utf-8", "surrogatepass")]
        try:
            await self._admit(topic, retention)
        except HistoryFull:
            return Stored(epoch=secrets.token_hex(6), top=0, entries=[])
        reply = await self._call(self._read, self._history_keys(topic, retention), args)
        epoch, top, rest = bytes(reply[0]).decode(), int(reply[1]), reply[2:]
        entries = [StoredEntry(int(rest[i]), bytes(rest[i + 1])) for i in range(0, len(rest), 2)]
        entries.reverse()
        return Stored(epoch=epoch, top=top, entries=entries)

    # ------------------------------------------------------------------ presence

    def _presence_keys(self, topic: str) -> list[bytes]:
        return [
            self._key("presence:", self._tag(topic)),
            self._key("presence-holders:", self._tag(topic)),
            self._key("presence-procs:", self._tag(topic)),
        ]

    def _local(self, topic: str) -> bytes:
        return self._local_prefix + f"{self.process}:{self._tag(topic)}".encode(
            "utf-8", "surrogatepass"
        )

    @staticmethod
    def _announcer(channel: bytes, announce: Announcements) -> list[bytes]:
        return [channel, *announce.join, *announce.leave]

    async def update(
        self,
        channel: bytes,
        topic: str,
        join: Mapping[str, bytes],
        leave: Collection[str],
        announce: Announcements,
    ) -> tuple[list[str], list[str]]:
        """Unregister ``leave`` and register ``join`` for this process."""
        keys = [*self._presence_keys(topic), self._local(topic)]
        args: list[Any] = [self.process, self._keep_ms, *self._announcer(channel, announce)]
        args += [len(leave), *leave]
        for member, info in join.items():
            args += [member, info]
        joined, left = await self._call(self._update, keys, args)
        return [bytes(m).decode() for m in joined], [bytes(m).decode() for m in left]

    async def sync(
        self, channel: bytes, topic: str, members: dict[str, bytes], announce: Announcements
    ) -> None:
        """Make this process's members of ``topic`` exactly ``members``."""
        keys = [*self._presence_keys(topic), self._local(topic)]
        args: list[Any] = [self.process, self._keep_ms, *self._announcer(channel, announce)]
        for member, info in members.items():
            args += [member, info]
        await self._call(self._sync, keys, args)

    async def _liveness(self) -> list[Any] | None:
        """What the sweep scripts must be told of the live processes: nothing, they read it."""
        return None

    def _sweep_call(
        self, channel: bytes, topic: str, what: str, announce: Announcements, live: Any
    ) -> _Call:
        keys = [*self._presence_keys(topic), self._alive, self._unsettled]
        args: list[Any] = [self._local_prefix, self._tag(topic), self.process, self._keep_ms]
        return self._sweep, keys, [*args, what, *self._announcer(channel, announce)]

    async def _sweep_one(
        self, channel: bytes, topic: str, what: str, announce: Announcements
    ) -> Any:
        live = await self._liveness()
        return await self._call(*self._sweep_call(channel, topic, what, announce, live))

    async def members(
        self, channel: bytes, topic: str, announce: Announcements
    ) -> dict[str, bytes]:
        """Sweep, then return the members and their info."""
        reply = await self._sweep_one(channel, topic, "members", announce)
        return {bytes(reply[i]).decode(): bytes(reply[i + 1]) for i in range(0, len(reply), 2)}

    async def snapshot(
        self, channel: bytes, topic: str, announce: Announcements
    ) -> PresenceSnapshot:
        """Sweep (if this process is alive), then read the members and if they are complete."""
        flat, unsettled_ms, registered = await self._sweep_one(channel, topic, "snapshot", announce)
        members = {bytes(flat[i]).decode(): bytes(flat[i + 1]) for i in range(0, len(flat), 2)}
        settles_in = max(0, int(unsettled_ms)) / 1000
        return PresenceSnapshot(
            members=members,
            partial=settles_in > 0 or not registered,
            settles_in=settles_in,
            registered=bool(registered),
        )

    async def count(self, channel: bytes, topic: str, announce: Announcements) -> int:
        """Sweep, then return the number of members."""
        return int(await self._sweep_one(channel, topic, "count", announce))

    async def sweep(
        self, channels: dict[str, bytes], topics: dict[str, int], announce: dict[str, Announcements]
    ) -> list[str]:
        """Sweep every topic in one round trip; return those where this process differs."""
        if not topics:
            return []
        names = list(topics)
        live = await self._liveness()
        calls = [
            self._sweep_call(channels[topic], topic, "held", announce[topic], live)
            for topic in names
        ]
        held = await self._run(calls)
        failed = next((result for result in held if isinstance(result, Exception)), None)
        if failed is not None:
            raise BrokerError(f"Redis refused a sweep: {failed}") from failed
        return [topic for topic, count in zip(names, held, strict=True) if count != topics[topic]]

    async def renew(self, timeout: float, was_alive: bool) -> bool:
        """Keep this process alive ``timeout`` more seconds; return whether it was alive."""
        self._keep_ms = max(self._keep_ms, _ms(3 * timeout))
        args = [self.process, _ms(timeout), self._keep_ms, int(was_alive)]
        return bool(await self._call(self._renew, [self._alive, self._unsettled], args))

    async def retire(self) -> None:
        """Declare this process dead."""
        try:
            await self._client.zrem(self._alive, self.process)
        except (RedisError, OSError) as exc:
            raise BrokerError(f"Redis did not answer: {exc}") from exc
