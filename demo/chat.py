"""The demo's channels: a room for everyone, an inbox per user, and a typing indicator.

- ``global-chat``: every subscriber sees every ``message`` (and ``typing`` and
  ``announcement``), and who is online (a presence channel). It keeps its last 100 lines of
  the day, so a page that reconnects gets what it missed.
- ``chat:user.<name>``: that user's inbox; only that user may subscribe. A direct message is a
  ``message`` event sent on *your own* inbox with ``{"to": <name>, "text": ...}``: the server
  delivers it to the recipient's inbox and echoes it to yours, so nobody ever needs to
  subscribe to someone else's inbox. Only names that logged in receive one (see
  :mod:`demo.users`); another is refused with ``rejected``. Inboxes keep their last 100
  messages of the day too, for at most ``MAX_USERS`` inboxes.
- ``typing``: a plain event (no channel), ``{}`` for the room or ``{"to": <name>}`` for a
  private chat; the server tells the room, or the recipient's inbox.

Handlers take typed events: the data arrives validated into a pydantic model (invalid data is
answered with an ``invalid-data`` error and the handler does not run), and what a handler
returns is the reply to a packet that carries an ``id``. Every event and model shows in the
AsyncAPI document at ``/ws/asyncapi.json``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from demo.auth import Username
from demo.users import MAX_USERS, Directory
from fastapi_channels import (
    ChannelListener,
    History,
    Reject,
    SocketConnection,
    SocketListener,
    SocketServer,
    channel,
    listener,
)
from fastapi_channels.auth import TokenUser


# --8<-- [start:listeners]
class Message(BaseModel):
    text: str = Field(min_length=1, max_length=2000)


class DirectMessage(Message):
    to: Username


def now() -> datetime:
    return datetime.now(UTC)


class ChatLine(BaseModel):
    """A message as everyone receives it: ``{"from": ..., "text": ..., "at": ...}``."""

    from_: str = Field(serialization_alias="from")
    text: str
    at: datetime = Field(default_factory=now)


class PrivateLine(ChatLine):
    to: str


class Posted(BaseModel):
    """The reply to a message sent as a request (with an ``id``)."""

    delivered: bool = True


class Announcement(BaseModel):
    text: str = Field(min_length=1, max_length=2000)


class Announced(Announcement):
    """An announcement as the room receives it."""

    at: datetime = Field(default_factory=now)


class TypingNotice(BaseModel):
    """Who is typing, and to whom (``None``: to the room)."""

    from_: str = Field(serialization_alias="from")
    to: str | None = None


KEPT = History(size=100, ttl=24 * 3600, events={"message", "announcement"})
"""The last 100 lines of the day; typing indicators are live only."""


@channel("global-chat")
class GlobalChat(ChannelListener):
    """The room everyone is in, with who is online."""

    require_user = True
    presence = True  # members: {"id": <name>}
    history = KEPT
    sends = {"message": ChatLine, "typing": TypingNotice, "announcement": Announced}

    @channel.on("message")
    async def message(self, message: Message, user: TokenUser) -> Posted:
        """Say something to everyone."""
        await self.broadcast("global-chat", "message", ChatLine(from_=user.id, text=message.text))
        return Posted()


def inbox(name: str) -> str:
    """The inbox channel of user ``name``."""
    return f"chat:user.{name}"


@channel("chat:user.*")
class Inbox(ChannelListener):
    """A user's inbox: direct messages to and from them. Only its owner may subscribe."""

    require_user = True
    history = History(
        size=100, ttl=24 * 3600, events={"message"}, max_channels=MAX_USERS
    )  # inboxes of made-up names are refused before they get here; this bounds the rest
    sends = {"message": PrivateLine, "typing": TypingNotice}

    def __init__(self, users: Directory) -> None:
        self.users = users

    async def is_authorised(self, connection: SocketConnection, user: TokenUser) -> bool:
        return self.wildcard == user.id

    @channel.on("message")
    async def message(self, message: DirectMessage, user: TokenUser) -> Posted:
        """Send a direct message (on your own inbox): to the recipient's inbox, and to yours.

        Only to a name that logged in: any other is refused (``rejected``), stored nowhere.
        """
        if message.to != user.id and not await self.users.exists(message.to):
            raise Reject(f"no user named {message.to} has logged in")
        line = PrivateLine(from_=user.id, to=message.to, text=message.text)
        await self.broadcast(inbox(message.to), "message", line)
        if message.to != user.id:
            await self.broadcast(inbox(user.id), "message", line)
        return Posted()


class Typing(BaseModel):
    to: Username | None = None


@listener("typing")
class TypingListener(SocketListener):
    """Tell the room, or the one you are writing to, that you are typing."""

    require_user = True

    def __init__(self, server: SocketServer) -> None:
        self.server = server

    async def handle(self, typing: Typing | None, user: TokenUser) -> None:
        to = typing.to if typing is not None else None
        notice = TypingNotice(from_=user.id, to=to)
        if to is None:
            await self.server.broadcast(GlobalChat, "global-chat", "typing", notice)
        elif to != user.id:
            await self.server.broadcast(Inbox, inbox(to), "typing", notice)


# --8<-- [end:listeners]

LISTENERS = (GlobalChat, Inbox, TypingListener)
