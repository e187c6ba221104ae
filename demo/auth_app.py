"""JWT authentication end to end: ``uvicorn demo.auth_app:app``.

``POST /login`` checks a name and password and issues a 15-minute token; the same token
authenticates HTTP routes (``Authorization: Bearer``) and the websocket (offered as its
subprotocol, as the Envuso client does, or as ``bearer, <token>``). Each user has a private
``notes.<id>`` channel; a connection renews its token in-band with ``channels:authenticate``.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel

from fastapi_channels import ChannelListener, Channels, SocketConnection, SocketPacket, channel
from fastapi_channels.auth import JWTAuth, Key, TokenVerifier


@dataclass
class User:
    id: str
    name: str


# Stands for the app's user store. Store password hashes (argon2, bcrypt), never passwords.
PASSWORDS = {"ann": "correct horse", "bob": "battery staple"}
USERS = {name: User(id=name, name=name.title()) for name in PASSWORDS}

# Every process that verifies tokens needs the same secret: 32 random bytes or more.
SECRET = os.environ.get("JWT_SECRET", "").encode() or secrets.token_bytes(32)

verifier = TokenVerifier(
    Key.hmac(SECRET, kid="2024-06"),
    issuer="demo",
    audience="demo",
    leeway=5,
)


async def load_user(claims: Mapping[str, Any]) -> User | None:
    """Turn verified claims into the app's user; ``None`` refuses (the user was deleted)."""
    return USERS.get(claims["sub"])


auth = JWTAuth(verifier, user_loader=load_user)


@channel("notes.*")
class Notes(ChannelListener):
    """A user's private channel: only its owner may subscribe."""

    require_user = True

    async def is_authorised(self, connection: SocketConnection, user: User) -> bool:
        return self.wildcard == user.id

    @channel.on("note")
    async def note(self, connection: SocketConnection, user: User, packet: SocketPacket) -> None:
        await self.broadcast(self.channel_name, "note", {"by": user.name, "text": packet.data})


channels = Channels(user=auth, listeners=[Notes])
app = FastAPI()
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
    expected = PASSWORDS.get(credentials.username, "")
    valid = hmac.compare_digest(expected.encode(), credentials.password.encode())
    if not (expected and valid):
        raise HTTPException(401, "wrong name or password")
    lifetime = 15 * 60
    token = auth.issue(credentials.username, lifetime=lifetime)
    return Token(access_token=token, expires_in=lifetime)


@app.get("/me")
async def me(user: User = Depends(auth.required)) -> User:
    return user
