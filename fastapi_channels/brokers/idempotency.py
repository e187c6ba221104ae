"""Idempotent publishing: a message published with a key is delivered once per key and window.

`IdempotencyStore` is an interface a broker implements beside
`fastapi_channels.brokers.base.Broker`, found by type like
`fastapi_channels.brokers.stores.HistoryStore`. The record of the keys seen lives where every
process agrees: in the broker (a `MemoryHub`, Redis), so a message retried on another process,
or by another client connection, is still deduplicated.

The check and the publish are one atomic step (one Lua script on Redis), so a publish that
failed with `fastapi_channels.wire.errors.OutcomeUnknown` either happened (then the key is
recorded, and a retry with the same key publishes nothing) or did not (then the retry does).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from fastapi_channels.wire.stored import Position, Retention

__all__ = ["IdempotencyStore", "Published"]


@dataclass(frozen=True, slots=True)
class Published:
    """What an idempotent publish did.

    Attributes:
        duplicate: the key was seen on this topic within the window: nothing was published now.
        position: the stored message's position (for a duplicate, the first one's), or None on a
            topic published without retention.
    """

    duplicate: bool
    position: Position | None = None


class IdempotencyStore(ABC):
    """A broker that publishes a message at most once per (topic, key) within a window."""

    @abstractmethod
    async def publish_once(
        self,
        topic: str,
        data: bytes,
        key: str,
        window: float,
        retention: Retention | None = None,
    ) -> Published:
        """Publish ``data`` on ``topic`` unless ``key`` was published there in the last ``window``.

        Checking the key, recording it and publishing are one atomic step for every process.
        With ``retention`` the message is stored as by ``HistoryStore.publish_stored`` (the
        broker must be one) and the first publish's position is remembered with the key.
        Unlike ``Broker.publish``, the message is not handed to this process's subscribers
        before the broker took it: it reaches every process, this one included, through the
        broker, and is not ordered with plain publishes of the same topic.

        Raises:
            BrokerError: the broker could not be reached; nothing was published or recorded.
            OutcomeUnknown: the broker took the command but did not answer in time; the
                message may have been published (and the key recorded). Retry with the same
                key.
        """
