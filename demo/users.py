"""Who exists in the demo: the names that logged in during the last day.

Direct messages go only to names listed here, so a client cannot make the server keep an inbox
for every name it invents. The list is bounded too (``MAX_USERS``): a login that would add one
name too many is refused until older ones expire. With ``REDIS_URL`` set, every process of the
demo shares the list (a sorted set ``<prefix>:demo-users`` of name to last login, in ms, under
the URL's ``prefix`` parameter as the broker reads it); without it, the list lives in this
process.
"""

from __future__ import annotations

import time
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MAX_USERS: Final = 1000
"""The most names the demo knows at once; each may have an inbox that keeps history."""
KEEP: Final = 24 * 3600.0
"""Seconds a name stays known after its last login (as long as an inbox keeps its lines)."""

_ADD: Final = """
local now = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
local known = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not known and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
return 1
"""
"""KEYS: the list. ARGV: name, now ms, keep ms, the most names. Returns whether it was added."""


class Directory:
    """The names that logged in during the last ``keep`` seconds, at most ``limit`` of them.

    Args:
        url: a Redis URL shared by every process of the demo; ``None`` keeps the list here.
        limit: the most names known at once.
        keep: seconds a name stays known after its last login.
    """

    def __init__(
        self, url: str | None = None, *, limit: int = MAX_USERS, keep: float = KEEP
    ) -> None:
        self.limit = limit
        self.keep = keep
        self._known: dict[str, float] = {}
        self._redis = None
        self._key = "fastapi_channels:demo-users"
        if url:
            from redis.asyncio import Redis

            parts = urlsplit(url)
            query = parse_qsl(parts.query, keep_blank_values=True)
            prefixes = [value for name, value in query if name == "prefix"]
            if prefixes:
                self._key = f"{prefixes[-1]}:demo-users"
            rest = urlencode([(name, value) for name, value in query if name != "prefix"])
            self._redis = Redis.from_url(urlunsplit(parts._replace(query=rest)))

    async def add(self, name: str) -> bool:
        """Record a login of ``name``; False when the list is full (and ``name`` not in it)."""
        now = time.time()
        if self._redis is not None:
            args = (name, int(now * 1000), int(self.keep * 1000), self.limit)
            return bool(await self._redis.eval(_ADD, 1, self._key, *args))
        for gone in [n for n, at in self._known.items() if at <= now - self.keep]:
            del self._known[gone]
        if name not in self._known and len(self._known) >= self.limit:
            return False
        self._known[name] = now
        return True

    async def aclose(self) -> None:
        """Close the Redis connections, if any."""
        if self._redis is not None:
            await self._redis.aclose()

    async def exists(self, name: str) -> bool:
        """Whether ``name`` logged in during the last ``keep`` seconds."""
        oldest = time.time() - self.keep
        if self._redis is not None:
            score = await self._redis.zscore(self._key, name)
            return score is not None and score / 1000 > oldest
        return self._known.get(name, 0.0) > oldest
