"""The samples of docs/authentication.md: the set-up, key rotation, a user loader class, and a
Python client sending the token in a header."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import injector
from injector import inject

from fastapi_channels.auth import KeySet

SECRET = secrets.token_bytes(32)  # from the environment in a real app
NEW_SECRET, OLD_SECRET = secrets.token_bytes(32), secrets.token_bytes(32)


@dataclass
class User:
    id: str
    name: str


TABLE = {"ann": User("ann", "Ann")}


async def load_user(claims: Mapping[str, Any]) -> User | None:
    return TABLE.get(claims["sub"])


# --8<-- [start:setup]
from fastapi import Depends, FastAPI

from fastapi_channels import Channels
from fastapi_channels.auth import JWTAuth, Key, TokenVerifier

verifier = TokenVerifier(Key.hmac(SECRET), issuer="my-app", audience="my-app")
auth = JWTAuth(verifier, user_loader=load_user)

channels = Channels(user=auth)  # websockets: the user, or None when anonymous
app = FastAPI()
app.include_router(channels.router)


@app.get("/me")
async def me(user: User = Depends(auth.required)) -> User:  # HTTP: 401 without a token
    return user


# --8<-- [end:setup]


def rotation() -> tuple[TokenVerifier, TokenVerifier]:
    """Keys before and during a rotation (the page's sample is the second)."""
    before = TokenVerifier(Key.hmac(OLD_SECRET, kid="2024-06"))
    # --8<-- [start:rotation]
    keys = KeySet(
        [Key.hmac(NEW_SECRET, kid="2024-07"), Key.hmac(OLD_SECRET, kid="2024-06")],
        current="2024-07",  # issue() signs with this one
    )
    verifier = TokenVerifier(keys)
    # --8<-- [end:rotation]
    return before, verifier


class Session:
    """Stands for a database session (SQLAlchemy's `AsyncSession.get` has this shape)."""

    async def get(self, model: type[User], key: str) -> User | None:
        return TABLE.get(key)


class SessionFactory:
    """Stands for a database session factory, bound in the app's container."""

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[Session]:
        yield Session()


# --8<-- [start:loader]
class DatabaseUsers:
    @inject
    def __init__(self, sessions: SessionFactory) -> None:
        self.sessions = sessions

    async def load_user(self, claims: Mapping[str, Any]) -> User | None:
        async with self.sessions() as session:
            return await session.get(User, claims["sub"])


auth_from_database = JWTAuth(verifier, user_loader=DatabaseUsers)  # built by the container
# --8<-- [end:loader]


# --8<-- [start:header]
import json

import websockets


async def first_packet(url: str, token: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(url, additional_headers=headers) as socket:
        packet: dict[str, Any] = json.loads(await socket.recv())
        return packet


# --8<-- [end:header]


async def check() -> None:
    """Each sample does what the page says, over HTTP, in-process and on a real server."""
    from docs.examples._support import started
    from fastapi_channels.auth import AuthenticationError, AuthFailure
    from fastapi_channels.testing import SocketTestClient, lifespan
    from tests.live import live_server

    token = verifier.issue("ann")
    async with started(app) as http:
        assert (await http.get("/me")).status_code == 401
        me = await http.get("/me", headers={"Authorization": f"Bearer {token}"})
        assert me.json() == {"id": "ann", "name": "Ann"}
        async with SocketTestClient(app, subprotocols=[token]) as client:
            assert client.subprotocol == token  # a token offered alone is echoed back

    async with live_server(app) as host:
        assert (await first_packet(f"ws://{host}/ws", token))["event"] == "ready"
        refused = await first_packet(f"ws://{host}/ws", token[:-2])
        assert refused == {"event": "disconnect", "data": {"reason": "authentication failed"}}

    before, during = rotation()
    old_token = before.issue("ann")
    assert during.verify(old_token).kid == "2024-06"  # old tokens still verify
    assert during.verify(during.issue("ann")).kid == "2024-07"  # new ones carry the new kid
    after = TokenVerifier(Key.hmac(NEW_SECRET, kid="2024-07"))
    try:
        after.verify(old_token)
    except AuthenticationError as exc:
        assert exc.failure is AuthFailure.UNKNOWN_KEY
    else:
        raise AssertionError("a token of a removed key must be refused")

    container = injector.Injector()
    container.binder.bind(SessionFactory, to=SessionFactory())
    database = Channels(user=auth_from_database, container=container)
    with_database = FastAPI()
    with_database.include_router(database.router)
    async with lifespan(with_database):
        async with SocketTestClient(with_database, subprotocols=[token]) as client:
            assert client.ready is not None
        deleted = SocketTestClient(with_database, subprotocols=[verifier.issue("zed")])
        assert (await deleted.connect()).data == {"reason": "authentication failed"}
