"""A JWKS endpoint the tests control, served by uvicorn on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.auth_support import claims
from tests.live import live_server

PATH = "/.well-known/jwks.json"


@dataclass
class SigningKey:
    """A provider's private key; `jwk` is what the provider publishes of it."""

    kid: str
    private: Any = field(repr=False)
    algorithm: str = "ES256"
    publish_alg: bool = True

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        return cls(kid, ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        to_jwk = (
            RSAAlgorithm.to_jwk if self.algorithm.startswith(("RS", "PS")) else ECAlgorithm.to_jwk
        )
        data: dict[str, Any] = to_jwk(public, as_dict=True)
        data.update(kid=self.kid, use="sig")
        if self.publish_alg:
            data["alg"] = self.algorithm
        return data

    def sign(self, payload: dict[str, Any] | None = None, **header: Any) -> str:
        headers = {"kid": self.kid, **header}
        return jwt.encode(payload or claims(), self.private, self.algorithm, headers=headers)


def unknown_kid_token() -> str:
    """A token naming a random kid; its signature is never looked at."""
    header = {"alg": "ES256", "kid": f"forged-{random.getrandbits(64):x}"}
    parts = [jwt.utils.base64url_encode(json.dumps(part).encode()) for part in (header, claims())]
    return b".".join([*parts, b"c2ln"]).decode()


class Provider:
    """Serves ``{"keys": [...]}`` at ``paths``: the keys, headers and status the test sets.

    Attributes:
        fetches: how many requests reached the endpoint.
    """

    def __init__(self, *keys: SigningKey, paths: tuple[str, ...] = (PATH,)) -> None:
        self.keys = list(keys)
        self.extra: list[dict[str, Any]] = []
        self.headers: dict[str, str] = {}
        self.status = 200
        self.fetches = 0
        self.base = ""
        self.url = ""
        self.app = Starlette(routes=[Route(path, self._serve) for path in paths])

    async def _serve(self, request: Request) -> Response:
        self.fetches += 1
        if self.status != 200:
            return Response("unavailable", status_code=self.status)
        document = {"keys": [key.jwk() for key in self.keys] + self.extra}
        return JSONResponse(document, headers=self.headers)


@contextlib.asynccontextmanager
async def serving(provider: Provider) -> AsyncIterator[Provider]:
    async with live_server(provider.app) as address:
        provider.base = f"http://{address}"
        provider.url = provider.base + PATH
        yield provider


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def gather_bounded(*coroutines: Any, timeout: float = 30) -> list[Any]:
    """Run ``coroutines`` concurrently; their results, or the exceptions they raised."""
    async with asyncio.timeout(timeout):
        return await asyncio.gather(*coroutines, return_exceptions=True)
