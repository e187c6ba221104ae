from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import injector
import pytest
from fastapi import Depends, FastAPI

from fastapi_channels.auth import JWTAuth, Key, TokenSource, TokenUser, TokenVerifier
from fastapi_channels.auth.users import UserLoader
from fastapi_channels.wire.errors import ConfigurationError

from .auth_support import OTHER_SECRET, SECRET, claims, hmac_auth, hs256


@dataclass
class User:
    id: str
    name: str


USERS = {"42": User("42", "Ada")}


async def load_user(token_claims: Mapping[str, Any]) -> User | None:
    return USERS.get(token_claims["sub"])


def app_for(auth: JWTAuth[Any]) -> FastAPI:
    app = FastAPI()

    @app.get("/optional")
    async def optional(user: Any = Depends(auth)) -> dict[str, Any]:
        return {"user": None if user is None else user.id}

    @app.get("/required")
    async def required(user: Any = Depends(auth.required)) -> dict[str, Any]:
        return {"user": user.id}

    return app


async def get(app: FastAPI, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.get(path, **kwargs)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_header_token_authenticates_http_routes() -> None:
    app = app_for(JWTAuth(TokenVerifier(Key.hmac(SECRET)), user_loader=load_user))
    response = await get(app, "/required", headers=bearer(hs256(claims())))
    assert response.status_code == 200 and response.json() == {"user": "42"}


async def test_default_user_is_a_token_user() -> None:
    auth = hmac_auth()
    seen: list[Any] = []
    app = FastAPI()

    @app.get("/")
    async def index(user: TokenUser | None = Depends(auth)) -> None:
        seen.append(user)

    await get(app, "/", headers=bearer(hs256(claims(role="x"))))
    assert isinstance(seen[0], TokenUser) and seen[0].id == "42" and seen[0].claims["role"] == "x"
    assert "role" not in repr(seen[0])


async def test_anonymous_allowed_on_the_optional_dependency_only() -> None:
    app = app_for(hmac_auth())
    assert (await get(app, "/optional")).json() == {"user": None}
    response = await get(app, "/required")
    assert response.status_code == 401
    assert response.json() == {"detail": "authentication required"}
    assert response.headers["www-authenticate"] == "Bearer"


async def test_allow_anonymous_false_refuses_everywhere() -> None:
    auth = hmac_auth(allow_anonymous=False)
    assert auth.required is auth
    assert (await get(app_for(auth), "/optional")).status_code == 401


async def test_required_is_a_cached_variant() -> None:
    auth = hmac_auth()
    assert auth.required is auth.required
    assert auth.required.allow_anonymous is False and auth.allow_anonymous is True


async def test_refusals_are_generic_on_the_wire_and_specific_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = app_for(hmac_auth())
    token = hs256(claims(), OTHER_SECRET)
    with caplog.at_level(logging.INFO, logger="fastapi_channels.auth"):
        response = await get(app, "/optional", headers=bearer(token))
    assert response.status_code == 401
    assert response.json() == {"detail": "authentication failed"}
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert token not in response.text
    [record] = [r for r in caplog.records if r.name == "fastapi_channels.auth"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "signature" in message and "source: header" in message and "/optional" in message
    assert token not in message and token.split(".")[1] not in message


async def test_expired_token_is_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fastapi_channels.auth"):
        response = await get(
            app_for(hmac_auth()), "/optional", headers=bearer(hs256(claims(lifetime=-60)))
        )
    assert response.status_code == 401
    [record] = [r for r in caplog.records if r.name == "fastapi_channels.auth"]
    assert record.levelno == logging.INFO and "expired" in record.getMessage()


async def test_unknown_user_is_refused() -> None:
    app = app_for(JWTAuth(TokenVerifier(Key.hmac(SECRET)), user_loader=load_user))
    response = await get(app, "/optional", headers=bearer(hs256(claims(sub="7"))))
    assert response.status_code == 401 and response.json() == {"detail": "authentication failed"}


async def test_subject_claim_is_configurable() -> None:
    auth = hmac_auth(subject_claim="uid")
    token = hs256({**claims(), "uid": "u-1"})
    assert (await get(app_for(auth), "/required", headers=bearer(token))).json() == {"user": "u-1"}
    token = hs256({**claims(), "uid": 5})
    assert (await get(app_for(auth), "/required", headers=bearer(token))).status_code == 401


class Directory:
    def find(self, user_id: str) -> User | None:
        return USERS.get(user_id)


class DirectoryLoader:
    @injector.inject
    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    async def load_user(self, token_claims: Mapping[str, Any]) -> User | None:
        return self.directory.find(token_claims["sub"])


async def test_user_loader_service_built_by_an_injector() -> None:
    container = injector.Injector()
    auth = JWTAuth(TokenVerifier(Key.hmac(SECRET)), user_loader=DirectoryLoader, injector=container)
    response = await get(app_for(auth), "/required", headers=bearer(hs256(claims())))
    assert response.json() == {"user": "42"}


async def test_user_loader_instance() -> None:
    loader: UserLoader[User] = DirectoryLoader(Directory())
    auth = JWTAuth(TokenVerifier(Key.hmac(SECRET)), user_loader=loader)
    response = await get(app_for(auth), "/required", headers=bearer(hs256(claims())))
    assert response.json() == {"user": "42"}


async def test_user_loader_class_without_a_container_is_a_configuration_error() -> None:
    auth = JWTAuth(TokenVerifier(Key.hmac(SECRET)), user_loader=DirectoryLoader)
    with pytest.raises(ConfigurationError, match="no container is running"):
        await get(app_for(auth), "/required", headers=bearer(hs256(claims())))


async def test_cookie_and_query_sources_on_http() -> None:
    auth = hmac_auth(sources=["cookie", TokenSource.QUERY], cookie_name="jwt")
    app = app_for(auth)
    response = await get(app, "/required", headers={"Cookie": f"jwt={hs256(claims())}"})
    assert response.json() == {"user": "42"}
    response = await get(app, "/required", params={"token": hs256(claims(sub="43"))})
    assert response.json() == {"user": "43"}
    # The header source is not listed, so a header token is not read.
    assert (await get(app, "/required", headers=bearer(hs256(claims())))).status_code == 401


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sources": []}, "at least one token source"),
        ({"sources": ["header", "header"]}, "listed twice"),
        ({"sources": ["headers"]}, "token sources are subprotocol, header, cookie, query"),
        ({"origins": ["example.com"]}, "has no scheme"),
    ],
)
def test_configuration_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        hmac_auth(**options)


def test_origin_check_defaults() -> None:
    assert hmac_auth().origins is None
    assert repr(hmac_auth(sources=["cookie"]).origins).startswith(
        "OriginPolicy([], same_origin=True"
    )
    assert repr(hmac_auth(sources=["cookie"], origins="*").origins) == "OriginPolicy.any()"
    listed = hmac_auth(origins=["https://app.example.com"]).origins
    assert listed is not None and listed.is_allowed("https://app.example.com", host=None)


async def test_openapi_documents_a_bearer_scheme() -> None:
    schema = app_for(hmac_auth()).openapi()
    assert schema["components"]["securitySchemes"] == {
        "JWT": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }
    assert schema["paths"]["/required"]["get"]["security"] == [{"JWT": []}]


async def test_a_forged_log_line_in_the_path_is_escaped(caplog: pytest.LogCaptureFixture) -> None:
    auth = hmac_auth()
    app = FastAPI()

    @app.get("/items/{name}")
    async def item(name: str, user: Any = Depends(auth)) -> dict[str, Any]:
        return {"name": name}

    path = "/items/x%0d%0a2026-01-01 INFO forged: admin logged in%1b[31m%e2%80%ae"
    with caplog.at_level(logging.INFO, logger="fastapi_channels.auth"):
        response = await get(app, path, headers=bearer(hs256(claims(), OTHER_SECRET)))
    assert response.status_code == 401
    [record] = [r for r in caplog.records if r.name == "fastapi_channels.auth"]
    message = record.getMessage()
    assert "\r" not in message and "\n" not in message
    assert "\x1b" not in message and "\u202e" not in message
    assert "x\\r\\n2026-01-01 INFO forged: admin logged in\\x1b[31m\\u202e" in message
