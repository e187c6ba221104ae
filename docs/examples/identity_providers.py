"""The identity provider samples of docs/authentication.md: Auth0 and Keycloak, with keys from
their JWKS URL, and warming the keys at start-up.

`check()` serves each provider's JWKS path from a local server (plain http on loopback) and
connects with tokens shaped like the provider's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from fastapi_channels import Channels

# --8<-- [start:auth0]
from fastapi_channels.auth import JWKS, JWTAuth, TokenUser, TokenVerifier


def auth0(issuer: str, api_identifier: str) -> JWTAuth[TokenUser]:
    """Access tokens for the Auth0 API `api_identifier`, from the tenant at `issuer`."""
    keys = JWKS(f"{issuer}.well-known/jwks.json")
    verifier = TokenVerifier(keys, algorithms=["RS256"], issuer=issuer, audience=api_identifier)
    return JWTAuth(verifier)


# The tenant's domain (or your custom domain), with the trailing slash Auth0 puts in `iss`.
auth = auth0("https://TENANT.auth0.com/", api_identifier="https://api.example.com")
channels = Channels(user=auth)
# --8<-- [end:auth0]


# --8<-- [start:keycloak]
def keycloak(base_url: str, realm: str, client_id: str) -> JWTAuth[TokenUser]:
    """Access tokens of a Keycloak realm, issued to the client `client_id`."""
    issuer = f"{base_url}/realms/{realm}"  # before Keycloak 17: f"{base_url}/auth/realms/{realm}"
    keys = JWKS(f"{issuer}/protocol/openid-connect/certs")
    verifier = TokenVerifier(keys, algorithms=["RS256"], issuer=issuer, audience="account")

    async def load_user(claims: Mapping[str, Any]) -> TokenUser | None:
        if claims.get("azp") != client_id:  # issued to another client of the realm
            return None
        return TokenUser(claims["sub"], claims)

    return JWTAuth(verifier, user_loader=load_user)


keycloak_auth = keycloak("https://sso.example.com", realm="acme", client_id="chat-web")
# --8<-- [end:keycloak]


def warmed_app(auth: JWTAuth[Any], keys: JWKS) -> FastAPI:
    # --8<-- [start:warm]
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await keys.refresh()  # never raises: a provider that is down delays start-up by `timeout`
        yield

    app = FastAPI(lifespan=lifespan)
    app.include_router(Channels(user=auth).router)
    # --8<-- [end:warm]
    return app


async def check() -> None:
    """Each function builds the provider's URLs and accepts the provider's token shape."""
    import time

    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from fastapi_channels.testing import SocketTestClient, lifespan
    from tests.auth_support import rsa_private_pem
    from tests.jwks_provider import PATH, Provider, SigningKey, serving

    assert isinstance(auth.verifier.keys, JWKS)
    assert auth.verifier.keys.url == "https://TENANT.auth0.com/.well-known/jwks.json"
    assert isinstance(keycloak_auth.verifier.keys, JWKS)
    assert keycloak_auth.verifier.keys.url == (
        "https://sso.example.com/realms/acme/protocol/openid-connect/certs"
    )

    now = int(time.time())
    signing = SigningKey("k1", load_pem_private_key(rsa_private_pem(), None), "RS256")
    certs = "/realms/acme/protocol/openid-connect/certs"
    async with serving(Provider(signing, paths=(PATH, certs))) as provider:
        local_auth0 = auth0(f"{provider.base}/", api_identifier="https://api.example.com")
        auth0_token = signing.sign(
            {
                "iss": f"{provider.base}/",
                "sub": "auth0|5f7c8ec7c33c6c004bbafe82",
                "aud": ["https://api.example.com", f"{provider.base}/userinfo"],
                "iat": now,
                "exp": now + 60,
                "azp": "my-spa-client",
                "scope": "openid profile",
            }
        )
        app = FastAPI()
        app.include_router(Channels(user=local_auth0).router)
        async with lifespan(app), SocketTestClient(app, subprotocols=[auth0_token]) as client:
            assert client.ready is not None

        local_keycloak = keycloak(provider.base, realm="acme", client_id="chat-web")
        keys = local_keycloak.verifier.keys
        assert isinstance(keys, JWKS)
        for azp, accepted in (("chat-web", True), ("other-client", False)):
            keycloak_token = signing.sign(
                {
                    "iss": f"{provider.base}/realms/acme",
                    "sub": "f3b9e8a0-4c1d-4e55-9a39-2b0f3c3d9c11",
                    "aud": "account",
                    "azp": azp,
                    "typ": "Bearer",
                    "iat": now,
                    "exp": now + 60,
                }
            )
            app = warmed_app(local_keycloak, keys)
            async with lifespan(app):
                assert keys.kids == {"k1"}  # fetched at start-up
                client = SocketTestClient(app, subprotocols=[keycloak_token])
                first = await client.connect()
                assert (first.event == "ready") is accepted
                await client.close()
        assert provider.fetches == 3  # Auth0's first token; Keycloak's start-up, twice
