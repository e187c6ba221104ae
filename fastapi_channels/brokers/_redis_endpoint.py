"""Where the Redis brokers connect: one server, the master Redis Sentinel names, or a cluster.

``redis://``, ``rediss://`` and ``unix://`` URLs name one server. A Sentinel URL names the
Sentinels and the service they watch::

    redis+sentinel://[[user]:password@]host:26379[,host2:26379...]/service[/db][?options]

``rediss+sentinel://`` speaks TLS to the master and the Sentinels alike. The user and password
are the master's; the query options ``sentinel_username`` and ``sentinel_password`` are the
Sentinels' own. Other query options go to ``redis-py`` for the master's connections.

Every connection made from an endpoint's pool asks the Sentinels for the master when it
connects (the first Sentinel that answers with a master it considers up wins), so a connection
opened after a failover reaches the new master. A connection already open to a master that was
demoted is not redirected: the broker notices (Sentinel closes the demoted master's clients,
a write fails with ``READONLY``, or `Endpoint.master_address` no longer names it) and
reconnects.

A Redis Cluster URL names seed nodes, any of which tells the cluster's layout::

    redis+cluster://[[user]:password@]host:port[,host:port...][?options]

(``rediss+cluster://`` for TLS). Its endpoint's pool makes connections to the first seed; the
cluster broker makes its own to each shard master with the pool's options.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from redis.asyncio.connection import ConnectionPool
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

__all__ = ["CLUSTER_SCHEMES", "SENTINEL_SCHEMES", "Endpoint", "open_endpoint"]

SENTINEL_SCHEMES: Final = frozenset({"redis+sentinel", "rediss+sentinel"})
CLUSTER_SCHEMES: Final = frozenset({"redis+cluster", "rediss+cluster"})
_REDIS_PORT: Final = 6379
_SENTINEL_PORT: Final = 26379
_SENTINEL_OPTIONS: Final = ("sentinel_username", "sentinel_password")


class Endpoint:
    """A connection pool to the broker's Redis, and how to find the master behind it.

    Attributes:
        pool: makes connections; with Sentinel, each finds the current master as it connects.
        address: where Redis is, for log messages (never credentials).
        seeds: a cluster's seed nodes (host, port); empty for any other endpoint.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        address: str,
        sentinel: Sentinel | None = None,
        service: str = "",
        seeds: tuple[tuple[str, int], ...] = (),
    ) -> None:
        self.pool = pool
        self.address = address
        self.seeds = seeds
        self._sentinel = sentinel
        self._service = service

    @property
    def follows_failovers(self) -> bool:
        """Whether the master may change under the broker (it is found through Sentinel)."""
        return self._sentinel is not None

    async def master_address(self) -> tuple[str, int] | None:
        """Ask the Sentinels where the master is now; None for a single server.

        Takes up to the socket timeout per Sentinel that does not answer.

        Raises:
            RedisError: no Sentinel named a master it considers up.
        """
        if self._sentinel is None:
            return None
        host, port = await self._sentinel.discover_master(self._service)
        return str(host), int(port)

    async def close(self) -> None:
        """Close the connections to the Sentinels (the pool's own are the broker's to close)."""
        if self._sentinel is not None:
            await self._sentinel.aclose()


def open_endpoint(url: str, **options: Any) -> Endpoint:
    """Make the endpoint ``url`` names, its connections made with ``options`` (redis-py's).

    Raises:
        ValueError: the URL is malformed.
        TypeError: an option is unknown to redis-py.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme in SENTINEL_SCHEMES:
        return _sentinel_endpoint(url, options)
    if scheme in CLUSTER_SCHEMES:
        return _cluster_endpoint(url, options)
    pool = ConnectionPool.from_url(url, **options)
    return Endpoint(pool, _address(pool.connection_kwargs))


def _sentinel_endpoint(url: str, options: dict[str, Any]) -> Endpoint:
    parts = urlsplit(url)
    tls = parts.scheme.lower() == "rediss+sentinel"
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    sentinels = [_host_port(item) for item in hostlist.split(",") if item]
    if not sentinels:
        raise ValueError("a Sentinel URL needs at least one host:port")
    path = [unquote(segment) for segment in parts.path.split("/") if segment]
    if not path or len(path) > 2:
        raise ValueError("a Sentinel URL's path is /service or /service/db")
    service, db = path[0], (path[1] if len(path) == 2 else "0")
    query = parse_qsl(parts.query, keep_blank_values=True)
    sentinel_kwargs = {
        key: value for key, value in options.items() if key.startswith("socket_") or key == "retry"
    }
    for name, value in query:
        if name in _SENTINEL_OPTIONS:
            sentinel_kwargs[name.removeprefix("sentinel_")] = value
    if tls:
        sentinel_kwargs["ssl"] = True
    rest = urlencode([(name, value) for name, value in query if name not in _SENTINEL_OPTIONS])
    credentials = f"{userinfo}@" if userinfo else ""
    # redis-py parses the master's options (types, credentials, db) from an ordinary URL.
    master = ConnectionPool.from_url(f"redis://{credentials}sentinel/{db}?{rest}", **options)
    kwargs = dict(master.connection_kwargs)
    kwargs.pop("host", None)
    kwargs.pop("port", None)
    sentinel = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)
    pool = SentinelConnectionPool(service, sentinel, ssl=tls, **kwargs)  # type: ignore[no-untyped-call]
    hosts = ",".join(f"{host}:{port}" for host, port in sentinels)
    return Endpoint(pool, f"sentinel {service} via {hosts}/{db}", sentinel, service)


def _cluster_endpoint(url: str, options: dict[str, Any]) -> Endpoint:
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    seeds = tuple(_host_port(item, _REDIS_PORT) for item in hostlist.split(",") if item)
    if not seeds:
        raise ValueError("a Redis Cluster URL needs at least one host:port")
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError("Redis Cluster has database 0 only")
    scheme = "rediss" if parts.scheme.lower() == "rediss+cluster" else "redis"
    credentials = f"{userinfo}@" if userinfo else ""
    host, port = seeds[0]
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    pool = ConnectionPool.from_url(f"{scheme}://{credentials}{netloc}/0?{parts.query}", **options)
    hosts = ",".join(f"{host}:{port}" for host, port in seeds)
    return Endpoint(pool, f"cluster via {hosts}", seeds=seeds)


def _host_port(item: str, default_port: int = _SENTINEL_PORT) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``host`` (``default_port`` then)."""
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = item.partition(":")
    if not host:
        raise ValueError(f"no host in {item!r}")
    return host, int(port) if port else default_port


def _address(kwargs: dict[str, Any]) -> str:
    """Where Redis is, for log messages: host, port and database, never credentials."""
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
