"""The bodies and answers of the HTTP API (`fastapi_channels.edge.api`), as pydantic models.

They appear in the app's OpenAPI document. Strings are checked for what JSON allows but a
message cannot carry (lone surrogates); channel and event names are checked by the API itself,
with the websocket side's rules, because their limits come from the running ``Channels``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fastapi_channels.wire.protocol import MAX_KEY_LENGTH

__all__ = [
    "ApiError",
    "ClusterCounts",
    "Disconnect",
    "Done",
    "HistoryAnswer",
    "HistoryEntry",
    "PositionModel",
    "PresenceAnswer",
    "ProcessCounts",
    "Publish",
    "Published",
    "SendToUser",
]


def _encodable(value: str) -> str:
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Publish(_Body):
    """Broadcast an event to a channel's subscribers, on every process."""

    channel: str = Field(description="The concrete channel; a listener must serve it.")
    event: str = Field(description="The event name.")
    data: Any = Field(default=None, description="Any JSON value.")
    key: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        description="An idempotency key: the same key on the same channel within the "
        "server's idempotency window is delivered (and stored) once.",
    )

    @field_validator("channel", "event", "key")
    @classmethod
    def _unicode(cls, value: str | None) -> str | None:
        return value if value is None else _encodable(value)


class SendToUser(_Body):
    """Send a plain event to every connection of one user, on every process."""

    user: str = Field(min_length=1, description="The user's id (as the app files them).")
    event: str
    data: Any = None

    @field_validator("user", "event")
    @classmethod
    def _unicode(cls, value: str) -> str:
        return _encodable(value)


class Disconnect(_Body):
    """Disconnect every connection of one user, on every process."""

    user: str = Field(min_length=1)
    reason: str = Field(default="disconnected", max_length=200)

    @field_validator("user", "reason")
    @classmethod
    def _unicode(cls, value: str) -> str:
        return _encodable(value)


class UserChannel(_Body):
    """Subscribe or unsubscribe every connection of one user, on every process."""

    user: str = Field(min_length=1, description="The user's id (as the app files them).")
    channel: str = Field(description="The concrete channel; a listener must serve it.")

    @field_validator("user", "channel")
    @classmethod
    def _unicode(cls, value: str) -> str:
        return _encodable(value)


class PositionModel(BaseModel):
    """A position in a history channel."""

    offset: int
    epoch: str


class Published(BaseModel):
    """The answer to a publish."""

    position: PositionModel | None = Field(
        description="On a history channel, the message's position (a duplicate's: the "
        "first one's); else null."
    )


class Done(BaseModel):
    """The answer to a send: the broker took it."""

    ok: bool = True


class PresenceAnswer(BaseModel):
    """A presence channel's members, on every process."""

    channel: str
    members: list[dict[str, Any]]


class HistoryEntry(BaseModel):
    """One retained message."""

    position: PositionModel
    event: str
    data: Any


class HistoryAnswer(BaseModel):
    """A page of a history channel's retained messages, oldest first."""

    channel: str
    position: PositionModel = Field(description="The channel's latest position.")
    recovered: bool | None = Field(
        description="With since: whether the messages continue it; else null."
    )
    messages: list[HistoryEntry]


class ProcessCounts(BaseModel):
    """One process's counts."""

    process: str
    pid: int
    connections: int
    users: int
    channels: int
    subscriptions: int
    subscribers: dict[str, int] = Field(description="Subscribers per channel, the busiest first.")


class ClusterCounts(BaseModel):
    """Counts gathered from every process over the broker."""

    connections: int = Field(description="Connections on the processes that answered.")
    subscribers: dict[str, int] = Field(description="Per channel, summed over the answers.")
    processes: list[ProcessCounts]
    missing: list[str] = Field(description="Known processes that did not answer in time.")


class ApiError(BaseModel):
    """A failure that is not the caller's input."""

    detail: str
    code: str | None = None
