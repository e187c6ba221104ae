"""A provider's tokens on a live websocket: Channels, JWTAuth and a JWKS, each on a real server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from fastapi import Depends, FastAPI

from fastapi_channels import ChannelListener, Channels, channel
from fastapi_channels.auth import JWKS, JWTAuth, TokenUser, TokenVerifier
from tests.live import live_server

from .auth_support import claims, rsa_private_pem
from .jwks_provider import Clock, Provider, SigningKey, serving
from .test_auth_live import connect, expect_closed, receive

ISSUER = "https://tenant.example.com/"
AUDIENCE = "https://api.example.com"


@channel("room")
class Room(ChannelListener):
    require_user = True


def rsa_key(kid: str) -> SigningKey:
    return SigningKey(kid, load_pem_private_key(rsa_private_pem(), None), "RS256")


def token(key: SigningKey, **extra: object) -> str:
    return key.sign(claims("auth0|ann", iss=ISSUER, aud=[AUDIENCE, f"{ISSUER}userinfo"], **extra))


def build(keys: JWKS) -> FastAPI:
    verifier = TokenVerifier(keys, algorithms=["RS256"], issuer=ISSUER, audience=AUDIENCE)
    auth = JWTAuth(verifier)
    channels = Channels(user=auth.required, listeners=[Room])
    app = FastAPI()
    app.include_router(channels.router)

    @app.get("/me")
    async def me(user: TokenUser = Depends(auth.required)) -> str:
        return user.id

    return app


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    async with serving(Provider(rsa_key("2024-07"))) as running:
        yield running


async def test_a_provider_token_opens_a_channel_connection(provider: Provider) -> None:
    async with live_server(build(JWKS(provider.url))) as address:
        async with connect(address, "bearer", token(provider.keys[0])) as ws:
            assert (await receive(ws))["event"] == "ready"
            await ws.send('{"event": "subscribe-channel-request", "data": {"channel": "room"}}')
            answer = await receive(ws)
            assert answer["data"]["successful"] is True
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=5) as http:
            headers = {"Authorization": f"Bearer {token(provider.keys[0])}"}
            assert (await http.get("/me", headers=headers)).json() == "auth0|ann"
        async with connect(address, "bearer", token(SigningKey.ec("forged"))) as ws:
            disconnect = await receive(ws)
            assert disconnect["data"] == {"reason": "authentication failed"}
            await expect_closed(ws, 1000, "authentication failed")
    assert provider.fetches == 1


async def test_the_app_starts_while_the_provider_is_down(
    provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    provider.status = 503
    clock = Clock()
    with caplog.at_level(logging.INFO, "fastapi_channels.auth"):
        async with live_server(build(JWKS(provider.url, clock=clock))) as address:
            async with connect(address, "bearer", token(provider.keys[0])) as ws:
                assert (await receive(ws))["data"] == {"reason": "authentication failed"}
            refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
            assert any("no keys fetched yet" in line and "HTTP 503" in line for line in refusals)

            provider.status = 200
            clock.advance(10)
            async with connect(address, "bearer", token(provider.keys[0])) as ws:
                assert (await receive(ws))["event"] == "ready"
    assert provider.fetches == 2


async def test_a_rotated_key_is_used_at_its_first_token(provider: Provider) -> None:
    clock = Clock()
    async with live_server(build(JWKS(provider.url, clock=clock))) as address:
        async with connect(address, "bearer", token(provider.keys[0])) as ws:
            assert (await receive(ws))["event"] == "ready"
        rotated = SigningKey("2024-08", provider.keys[0].private, "RS256")
        provider.keys = [rotated]
        clock.advance(10)
        async with connect(address, "bearer", token(rotated)) as ws:
            assert (await receive(ws))["event"] == "ready"
    assert provider.fetches == 2
