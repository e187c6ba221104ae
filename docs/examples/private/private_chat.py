"""The tutorial's app: people log in, then talk in conversations only their two members can join.

docs/private-chat.md shows it as the reader's private_chat.py. From this directory,
`uvicorn private_chat:app --ws-max-size 65536` runs it; from the repository's root,
`uvicorn docs.examples.private.private_chat:app --ws-max-size 65536`. Its tests are
test_private_chat.py beside it, which import it as `private_chat`, as in the reader's project
(this directory is no package, so pytest puts it on the path).
"""

from __future__ import annotations

# --8<-- [start:imports]
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from fastapi_channels import (
    ChannelListener,
    Channels,
    Inject,
    SocketListener,
    SocketServer,
    channel,
    listener,
)
from fastapi_channels.auth import JWTAuth, Key, TokenVerifier

# --8<-- [end:imports]


# --8<-- [start:users]
@dataclass
class User:
    id: str
    name: str


# Stands for the app's user store. Keep password hashes (argon2, bcrypt), never passwords.
PASSWORDS = {"ann": "correct horse", "bob": "battery staple", "eve": "eavesdropper"}
USERS = {name: User(id=name, name=name.title()) for name in PASSWORDS}


def check_password(username: str, password: str) -> User | None:
    """The user these credentials belong to, or None."""
    expected = PASSWORDS.get(username, "")
    valid = hmac.compare_digest(expected.encode(), password.encode())
    return USERS[username] if expected and valid else None


# --8<-- [end:users]


# --8<-- [start:auth]
# Every process must verify with the same secret: 32 random bytes or more, from the environment.
SECRET = os.environ.get("CHAT_JWT_SECRET", "").encode() or secrets.token_bytes(32)
verifier = TokenVerifier(Key.hmac(SECRET), issuer="chat", audience="chat")


async def load_user(claims: Mapping[str, Any]) -> User | None:
    """Turn a verified token into the app's user; None refuses it (the user was deleted)."""
    return USERS.get(claims["sub"])


auth = JWTAuth(verifier, user_loader=load_user)
# --8<-- [end:auth]


# --8<-- [start:names]
def conversation(a: str, b: str) -> str:
    """The channel of the conversation between two users, whoever starts it: `dm:ann.bob`."""
    first, second = sorted((a, b))
    return f"dm:{first}.{second}"


def members(wildcard: str) -> list[str]:
    """The two members named by a conversation's wildcard (`ann.bob`); [] if it names none."""
    names = wildcard.split(".")
    return names if len(names) == 2 and names == sorted(set(names)) else []


# --8<-- [end:names]


# --8<-- [start:channel]
class Message(BaseModel):
    text: str = Field(min_length=1, max_length=2000)


class Line(BaseModel):
    """One line of a conversation, as its members receive it."""

    author: str
    text: str


async def deliver(server: SocketServer, author: str, to: str, text: str) -> Line:
    """Post a line to the conversation of `author` and `to`, and tell `to` about it."""
    line = Line(author=author, text=text)
    await server.broadcast(Conversation, conversation(author, to), "message", line)
    await server.send_to_user(to, "notification", {"from": author, "text": text})
    return line


@channel("dm:*")
class Conversation(ChannelListener):
    """A conversation between two people (`dm:ann.bob`): only they may subscribe."""

    require_user = True  # anonymous connections are refused before is_authorised
    sends = {"message": Line, "typing": dict[str, str]}

    def __init__(self, server: SocketServer) -> None:  # built once, by the container
        self.server = server

    async def is_authorised(self, user: User) -> bool:
        return user.id in members(self.wildcard)

    @channel.on("message")
    async def message(self, user: User, message: Message) -> Line:
        """Say something; the reply (to a request) is the line as the members received it."""
        (other,) = [name for name in members(self.wildcard) if name != user.id]
        return await deliver(self.server, user.id, other, message.text)

    @channel.on("typing")
    async def typing(self, user: User) -> None:
        await self.broadcast(self.channel_name, "typing", {"author": user.id})


@listener("contacts")
class Contacts(SocketListener):
    """Answer with the people the user can talk to, and the channel of each conversation."""

    require_user = True

    async def handle(self, user: User) -> dict[str, str]:
        return {name: conversation(user.id, name) for name in USERS if name != user.id}


# --8<-- [end:channel]


# --8<-- [start:app]
channels = Channels(user=auth, listeners=[Conversation, Contacts])
app = FastAPI(title="Private chat")
app.include_router(channels.router)


class Credentials(BaseModel):
    username: str
    password: str


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


@app.post("/login")
async def login(credentials: Credentials) -> Token:
    user = check_password(credentials.username, credentials.password)
    if user is None:
        raise HTTPException(401, "wrong name or password")
    lifetime = 15 * 60
    return Token(access_token=auth.issue(user.id, lifetime=lifetime), expires_in=lifetime)


@app.get("/me")
async def me(user: User = Depends(auth.required)) -> User:
    return user


# --8<-- [end:app]


# --8<-- [start:http]
@app.post("/conversations/{other}/messages")
async def post_message(
    other: str,
    message: Message,
    user: User = Depends(auth.required),  # 401 without a valid token
    server: SocketServer = Inject(SocketServer),
) -> Line:
    """Say something from HTTP (a form, a mobile app): the same as the socket's `message`."""
    if other not in USERS or other == user.id:
        raise HTTPException(404, "no such person")
    return await deliver(server, user.id, other, message.text)


# --8<-- [end:http]


# --8<-- [start:page]
PAGE = Path(__file__).with_name("page.html")  # beside this module


@app.get("/", response_class=HTMLResponse)
async def page() -> str:
    """The chat's page: log in, then talk (see page.html)."""
    return PAGE.read_text()


# --8<-- [end:page]
