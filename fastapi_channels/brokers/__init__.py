"""Brokers carry encoded messages between processes.

``create_broker(url)`` picks one by URL scheme: none or ``memory://`` gives the in-memory
default; ``redis://``, ``rediss://``, ``unix://`` and the Sentinel forms ``redis+sentinel://``
and ``rediss+sentinel://`` give the Redis broker, ``redis+cluster://`` and ``rediss+cluster://``
the Redis Cluster broker, ``nats://`` the NATS broker, each imported lazily so the ``redis`` and
``nats`` extras stay optional.
"""

from __future__ import annotations

from fastapi_channels.brokers.base import Broker, MessageHandler
from fastapi_channels.brokers.idempotency import IdempotencyStore, Published
from fastapi_channels.brokers.memory import MemoryBroker, MemoryHub
from fastapi_channels.brokers.stores import BoundedHistoryStore, HistoryStore, PresenceStore
from fastapi_channels.wire.errors import ConfigurationError

__all__ = [
    "BoundedHistoryStore",
    "Broker",
    "HistoryStore",
    "IdempotencyStore",
    "MemoryBroker",
    "MemoryHub",
    "MessageHandler",
    "PresenceStore",
    "Published",
    "create_broker",
]


def create_broker(url: str | None) -> Broker:
    """Create the broker a URL names.

    Raises:
        ConfigurationError: the scheme is unknown, or the extra it needs is not installed.
    """
    if not url or url.startswith("memory://"):
        return MemoryBroker()
    scheme = url.split("://", 1)[0]
    if scheme in {"redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel"}:
        return _redis_broker(url, cluster=False)
    if scheme in {"redis+cluster", "rediss+cluster"}:
        return _redis_broker(url, cluster=True)
    if scheme == "nats":
        try:
            from fastapi_channels.brokers.nats import (  # type: ignore[import-not-found,unused-ignore]
                NatsBroker,
            )
        except ImportError as exc:
            raise ConfigurationError(
                "the NATS broker needs the 'nats' extra: pip install 'fastapi-ws-channels[nats]'"
            ) from exc
        nats_broker: Broker = NatsBroker(url)
        return nats_broker
    raise ConfigurationError(
        f"unknown broker URL scheme {scheme!r}; use memory://, redis:// or nats://"
    )


def _redis_broker(url: str, *, cluster: bool) -> Broker:
    try:
        from fastapi_channels.brokers.redis import (  # type: ignore[import-not-found,unused-ignore]
            RedisBroker,
        )
        from fastapi_channels.brokers.redis_cluster import (  # type: ignore[import-not-found,unused-ignore]
            RedisClusterBroker,
        )
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigurationError(
            "the Redis broker needs the 'redis' extra: pip install 'fastapi-ws-channels[redis]'"
        ) from exc
    broker: Broker = RedisClusterBroker(url) if cluster else RedisBroker(url)
    return broker
