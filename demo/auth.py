"""The demo's login: a name is all it asks for, and what it hands back is a real JWT.

``POST /login`` with ``{"username": "ann"}`` answers ``{"token": <JWT>}`` whose subject is the
name. There is no password: anyone may log in under any name, which is fine for a demo and
nothing else: a real app checks credentials here, as the private chat tutorial does
(``docs/examples/private/private_chat.py``).

The same token authenticates the websocket (offered as its subprotocol, the Envuso client's
way) and HTTP routes (``Authorization: Bearer``). Tokens are signed with ``DEMO_JWT_SECRET``;
every process of the app must share it, or a token issued by one is refused by the others.
Without it each process makes up a random secret and logs a warning.

``POST /announce`` is for operators, not users: it wants ``DEMO_ADMIN_TOKEN`` as its bearer
token (a static secret from the environment; since anyone can log in under any name here, a
user's JWT could not tell an operator apart). Without ``DEMO_ADMIN_TOKEN`` it is switched off.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from demo.users import Directory
from fastapi_channels import Inject
from fastapi_channels.auth import JWTAuth, Key, TokenUser, TokenVerifier

logger = logging.getLogger("demo")

USERNAME_PATTERN = r"^[a-z0-9_-]{1,24}$"
"""Lower-case letters, digits, ``_`` and ``-``: safe in channel names, URLs and the page."""
Username = Annotated[str, Field(pattern=USERNAME_PATTERN)]
TOKEN_LIFETIME = 60 * 60
"""Seconds; the page fetches a fresh token before this runs out."""


def signing_secret() -> bytes:
    """``DEMO_JWT_SECRET``, or a random secret of this process (with a warning)."""
    configured = os.environ.get("DEMO_JWT_SECRET", "")
    if configured:
        return configured.encode()
    logger.warning(
        "DEMO_JWT_SECRET is not set: this process signs tokens with a random secret, so they "
        "stop working when it restarts and other processes refuse them (scripts/demo sets one)"
    )
    return secrets.token_bytes(32)


verifier = TokenVerifier(
    Key.hmac(signing_secret()), issuer="fastapi-channels-demo", audience="fastapi-channels-demo"
)
auth: JWTAuth[TokenUser] = JWTAuth(verifier, allow_anonymous=False)
"""The user of a connection or request: a ``TokenUser`` whose ``id`` is the name."""

router = APIRouter()


class Login(BaseModel):
    username: Username


class Token(BaseModel):
    token: str


# --8<-- [start:login]
@router.post("/login")
async def login(body: Login, users: Directory = Inject(Directory)) -> Token:
    """Demo login, no password: a token for whichever name is asked for.

    The name is recorded as one that exists (direct messages may go to it); 503 when the
    demo knows as many names as it keeps (see :mod:`demo.users`).
    """
    if not await users.add(body.username):
        raise HTTPException(503, "the demo has as many users as it keeps; try again later")
    return Token(token=auth.issue(body.username, lifetime=TOKEN_LIFETIME))


# --8<-- [end:login]

_bearer = HTTPBearer(auto_error=False, description="the value of DEMO_ADMIN_TOKEN")


async def require_admin(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Let through requests bearing ``DEMO_ADMIN_TOKEN``; 403 when it is not configured."""
    expected = os.environ.get("DEMO_ADMIN_TOKEN", "")
    if not expected:
        raise HTTPException(403, "announcements are off: set DEMO_ADMIN_TOKEN to enable them")
    presented = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise HTTPException(401, "the admin token is required", {"WWW-Authenticate": "Bearer"})
